#!/usr/bin/env python3
"""Self-tests of the replay benchmark (run_replay.py and the smoothd policy's replay answer); no smoothd.

    .venv/bin/python tools/selftest_replay.py [--full]

It starts its own fake LLM on a free port and POSTs smoothd-style requests to it:
  R1 a replay's request (REPLAY_MARK, only `done` offered, the page below) after /admin/run-start: the task's
     final `done` turn with success, filed under the announced run, noted as a replay
  R2 the same without the task text anywhere in the request: the announced run's task is used
  R3 a stale answer cannot pass: the value only in an earlier message (the recorded run), not on the page
     the replay reached -> success=false and the value is not echoed
  R4 summarise()/render(): ratios per pair, PASS/FAIL per target (a replay with 2 requests or 0.5x the
     tokens fails; one that meets all targets passes), the markdown names every task and target
  R5 run_replay.py fails fast (exit 2) without a smoothd binary
  R6 (--full) run_replay.py end to end through the stand-in tools/stub-smoothd, which has no replay: both runs of
     each task correct, the replayed run's requests counted, and the request/token/wall targets FAIL
Prints one line per check and ends with `N passed, M failed`; exit status 1 on any failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

import run_replay  # noqa: E402
from policies.smoothd import REPLAY_MARK  # noqa: E402

RESULTS: list[tuple[str, bool]] = []


def check(name: str, ok: bool, detail: str = '') -> None:
	RESULTS.append((name, bool(ok)))
	print(f'{"PASS" if ok else "FAIL"}  {name}' + (f'  -- {detail}' if detail and not ok else ''), flush=True)


def free_port() -> int:
	with socket.socket() as s:
		s.bind(('127.0.0.1', 0))
		return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
	req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={'Content-Type': 'application/json'})
	with urllib.request.urlopen(req, timeout=30) as r:
		return json.loads(r.read())


DONE_TOOL = {'type': 'function', 'function': {'name': 'done', 'parameters': {
	'type': 'object', 'properties': {'output': {'type': 'string'}, 'success': {'type': 'boolean'}},
	'required': ['output', 'success']}}}


def replay_body(system: str, page: str, history: list[dict] | None = None) -> dict:
	return {'model': 'fake-smoothd', 'tools': [DONE_TOOL], 'tool_choice': {'type': 'function', 'function': {'name': 'done'}},
	        'messages': [{'role': 'system', 'content': system}, *(history or []),
	                     {'role': 'user', 'content': f'{REPLAY_MARK}\nURL: http://127.0.0.1:8765/form.html\n{page}'}]}


def done_args(reply: dict) -> dict:
	calls = reply['choices'][0]['message'].get('tool_calls') or []
	return json.loads(calls[0]['function']['arguments']) if calls else {}


def policy_checks(llm: str, log: Path) -> None:
	tasks = {t['id']: t for t in json.loads((HERE / 'site/tasks.json').read_text())['tasks']}
	form = tasks['form_signup']
	task_text = form['task'].replace('{site}', 'http://127.0.0.1:8765')
	page = 'Thank you. Your application was received.\nConfirmation number: CONF-AA831D\n[0]<a href=/>Home</a>'

	post(f'{llm}/admin/run-start', {'policy': 'smoothd', 'task_id': 'form_signup', 'run_id': 'sel-r1'})
	a = done_args(post(f'{llm}/v1/chat/completions', replay_body(f'You are a browser agent. Task: {task_text}', page)))
	post(f'{llm}/admin/run-end', {'policy': 'smoothd', 'run_id': 'sel-r1'})
	check('R1 a replay request gets the final done with the answer from the page', a.get('success') is True
	      and 'CONF-AA831D' in str(a.get('output')), json.dumps(a))
	time.sleep(0.3)
	recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
	r1 = [r for r in recs if r.get('run_id') == 'sel-r1']
	check('R1 the request is filed under the announced run, as a replay', len(r1) == 1
	      and (r1[0].get('notes') or {}).get('replay') is True and r1[0].get('kind') == 'agent_step',
	      json.dumps([(r.get('run_id'), r.get('notes')) for r in recs])[:400])

	post(f'{llm}/admin/run-start', {'policy': 'smoothd', 'task_id': 'form_signup', 'run_id': 'sel-r2'})
	a = done_args(post(f'{llm}/v1/chat/completions', replay_body('You are a browser agent.', page)))
	post(f'{llm}/admin/run-end', {'policy': 'smoothd', 'run_id': 'sel-r2'})
	check('R2 without the task text, the announced run\'s task answers', a.get('success') is True
	      and 'CONF-AA831D' in str(a.get('output')), json.dumps(a))

	post(f'{llm}/admin/run-start', {'policy': 'smoothd', 'task_id': 'form_signup', 'run_id': 'sel-r3'})
	stale = [{'role': 'user', 'content': 'Earlier: Confirmation number: CONF-AA831D'},
	         {'role': 'assistant', 'content': 'Account created. The confirmation number is CONF-AA831D.'}]
	a = done_args(post(f'{llm}/v1/chat/completions', replay_body(
		f'Task: {task_text}', 'Something went wrong, please try again.\n[0]<button>Retry</button>', stale)))
	post(f'{llm}/admin/run-end', {'policy': 'smoothd', 'run_id': 'sel-r3'})
	check('R3 a value only in earlier messages is not the answer: success=false, not echoed',
	      a.get('success') is False and 'CONF-AA831D' not in str(a.get('output')), json.dumps(a))


def summary_checks() -> None:
	def run(wall, req, tok, correct=True, sources=None):
		return {'run_wall_s': wall, 'model_requests': req, 'prompt_tokens_total': tok, 'correct': correct,
		        'step_sources': sources or {}}
	pairs = [
		{'task_id': 'good', 'first': run(10.0, 5, 20000), 'replay': run(2.0, 1, 2000, sources={'replay': 4, 'model': 1})},
		{'task_id': 'good', 'first': run(12.0, 5, 21000), 'replay': run(3.0, 1, 2100, sources={'replay': 4, 'model': 1})},
		{'task_id': 'bad', 'first': run(10.0, 5, 20000), 'replay': run(5.0, 2, 10000, correct=False)},
	]
	s = run_replay.summarise(pairs)
	g, b, al = s['good'], s['bad'], s['ALL']
	check('R4 ratios per pair: wall 0.2 and 0.25 (max 0.25), tokens 0.1',
	      abs(g['wall_ratio_max'] - 0.25) < 1e-9 and abs(g['wall_ratio_median'] - 0.225) < 1e-9
	      and abs(g['tokens_ratio_max'] - 0.1) < 1e-9, json.dumps(g))
	check('R4 a replay that meets every target passes all four', all(g['pass'].values()), json.dumps(g['pass']))
	check('R4 2 requests, 0.5x tokens, 0.5x wall, wrong answer: all four fail',
	      not any(b['pass'].values()), json.dumps(b['pass']))
	check('R4 ALL fails when one task fails', not al['pass']['requests'] and al['pairs'] == 3, json.dumps(al['pass']))
	md = run_replay.render(s, {'runs': 2, 'latency_ms': 0})
	check('R4 the markdown names every task, the four targets and PASS/FAIL',
	      all(x in md for x in ('| good |', '| bad |', '| ALL |', 'at most 1 model request', '≤ 0.2× prompt tokens',
	                            '≤ 0.3× wall time', 'every task still correct', 'PASS', 'FAIL', 'model 2, replay 8', '11.00 → 2.50')), md)


def failfast_checks() -> None:
	env = {k: v for k, v in os.environ.items() if k != 'SMOOTHD_BIN'}
	p = subprocess.run([sys.executable, str(HERE / 'run_replay.py'), '--runs', '1', '--site-port', str(free_port())],
	                   env=env, capture_output=True, text=True, timeout=60)
	check(f'R5 run_replay.py fails fast without a binary (exit {p.returncode})',
	      p.returncode == 2 and 'SMOOTHD_BIN' in p.stderr, p.stderr[:300])


def full_checks() -> None:
	with tempfile.TemporaryDirectory(prefix='selftest-replay-full-') as tmp:
		out, md = Path(tmp) / 'replay.json', Path(tmp) / 'replay.md'
		env = {**os.environ, 'SMOOTHD_BIN': str(HERE / 'tools/stub-smoothd')}
		p = subprocess.run([sys.executable, str(HERE / 'run_replay.py'), '--runs', '1', '--tasks', 'form_signup',
		                    '--site-port', str(free_port()), '--llm-port', str(free_port()), '--out', str(out), '--md', str(md)],
		                   env=env, capture_output=True, text=True, timeout=600)
		d = json.loads(out.read_text()) if out.exists() else {}
		s = (d.get('summary') or {}).get('form_signup') or {}
		pair = (d.get('pairs') or [{}])[0]
		check('R6 end to end through the stand-in (no replay there): exit 1, both runs correct, targets FAIL',
		      p.returncode == 1 and md.exists() and s.get('first_correct') == 1 and s.get('replay_correct') == 1
		      and pair.get('replay', {}).get('model_requests', 0) > 1 and not s['pass']['requests']
		      and not s['pass']['tokens'] and s['pass']['correct'], (p.stderr or p.stdout)[-500:])


def main() -> int:
	tmp = Path(tempfile.mkdtemp(prefix='selftest-replay-'))
	lport = free_port()
	llm = f'http://127.0.0.1:{lport}'
	log = tmp / 'llm.jsonl'
	proc = subprocess.Popen([sys.executable, str(HERE / 'fake_llm.py'), '--port', str(lport), '--log', str(log),
	                         '--site-url', 'http://127.0.0.1:8765', '--default-policy', 'smoothd'],
	                        stdout=subprocess.DEVNULL, stderr=open(tmp / 'fake-llm.stderr', 'w'))
	try:
		t = time.time()
		while time.time() - t < 20:
			try:
				urllib.request.urlopen(f'{llm}/healthz', timeout=2)
				break
			except Exception:
				time.sleep(0.1)
		policy_checks(llm, log)
		summary_checks()
		failfast_checks()
		if '--full' in sys.argv[1:]:
			full_checks()
	finally:
		proc.terminate()
		proc.wait(timeout=10)
	failed = sum(1 for _, ok in RESULTS if not ok)
	print(f'{len(RESULTS) - failed} passed, {failed} failed')
	return 1 if failed else 0


if __name__ == '__main__':
	raise SystemExit(main())
