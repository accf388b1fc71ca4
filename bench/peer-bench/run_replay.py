#!/usr/bin/env python3
"""Replay benchmark (smoothd issue 13): every peer-bench task run first with the model and recorded,
then run again from its recorded path, in one smoothd, and the replayed run measured against its
first run.

    SMOOTHD_BIN=<checkout>/target/release/smoothd .venv/bin/python run_replay.py --runs 3
    .venv/bin/python run_replay.py --summary-only          # re-print the tables from results/replay.json

Each round starts one smoothd (fresh data dir and SQLite database, as run_smoothd.py does) and, task by
task, submits the task with the real SDK twice:
  1. first run:  experimental_features={"replay": {"key": "<task id>", "mode": "record"}}
  2. replayed:   experimental_features={"replay": {"key": "<task id>", "mode": "auto"}}
and measures each with run_smoothd.run_one() (same settings, same metric code). Per run it adds
  * model_requests: the fake LLM's log records filed under the run (every kind, not only agent steps);
  * prompt_tokens_total: their prompt tokens, counted by the fake LLM (o200k_base);
  * step_sources: the `source` of the run's step traces (GET /v1/task/{id}/steps): model / replay;
  * correct: status done, every expected string in the output, and the model's `done` (if one was asked)
    said success. The fake LLM's smoothd policy answers a replay's one request (REPLAY_MARK) from the
    page text in that request only, so a stale answer cannot pass.
The targets (issue 13) are checked per pair (replayed run / its first run): at most 1 model request,
<= 0.2x the prompt tokens, <= 0.3x the wall time, every task still correct. The markdown goes to
--md (results/replay.md), the runs and the summary to --out (results/replay.json).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_browser_use as rbu  # noqa: E402
import run_smoothd as rs  # noqa: E402

TARGETS = {'max_requests': 1, 'max_tokens_ratio': 0.2, 'max_wall_ratio': 0.3}


def features(task_id: str, mode: str) -> dict:
	return {'replay': {'key': task_id, 'mode': mode}}


def step_sources(sd, task_id: str | None) -> dict[str, int]:
	"""How many of the task's step traces came from the model and from the recorded path."""
	if not task_id:
		return {}
	code, body = sd.get_json(f'/v1/task/{task_id}/steps', timeout=10)
	r = (body or {}).get('r') if isinstance(body, dict) else None
	steps = r if isinstance(r, list) else (r.get('steps') if isinstance(r, dict) else None)
	out: dict[str, int] = {}
	for s in steps or []:
		if isinstance(s, dict):
			k = str(s.get('source') or 'model')
			out[k] = out.get(k, 0) + 1
	return out


def add_replay_metrics(m: dict, task: dict, llm_log: Path, sd) -> dict:
	reqs = rbu.read_llm_log(llm_log, m['run_id'])
	m['model_requests'] = len(reqs)
	m['prompt_tokens_total'] = sum(int(r.get('prompt_tokens') or 0) for r in reqs)
	m['replay_requests'] = sum(1 for r in reqs if (r.get('notes') or {}).get('replay'))
	m['step_sources'] = step_sources(sd, m.get('smoothd_task_id'))
	out = m.get('final_result') or ''
	asked_done = 'done' in (m.get('actions') or [])
	m['correct'] = bool(m.get('status') == 'done' and out and all(e in out for e in task['expected'])
	                    and (m.get('self_reported_success') or not asked_done))
	return m


# =============================================================================================
# summary and markdown
# =============================================================================================
def _ratio(a, b):
	return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else None


def summarise(pairs: list[dict]) -> dict:
	"""pairs: [{'task_id', 'first': run, 'replay': run}] -> per task (and ALL) medians, worst ratios and
	PASS/FAIL per target."""
	by_task: dict[str, list[dict]] = {}
	for p in pairs:
		by_task.setdefault(p['task_id'], []).append(p)
	out: dict = {}
	for tid, ps in list(by_task.items()) + [('ALL', pairs)]:
		med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
		f = [p['first'] for p in ps]
		r = [p['replay'] for p in ps]
		wall_r = [_ratio(p['replay'].get('run_wall_s'), p['first'].get('run_wall_s')) for p in ps]
		tok_r = [_ratio(p['replay'].get('prompt_tokens_total'), p['first'].get('prompt_tokens_total')) for p in ps]
		s = {
			'pairs': len(ps),
			'first_wall_s': med([x['run_wall_s'] for x in f if x.get('run_wall_s') is not None]),
			'replay_wall_s': med([x['run_wall_s'] for x in r if x.get('run_wall_s') is not None]),
			'first_requests': med([x.get('model_requests', 0) for x in f]),
			'replay_requests': med([x.get('model_requests', 0) for x in r]),
			'replay_requests_max': max((x.get('model_requests', 0) for x in r), default=None),
			'first_prompt_tokens': med([x.get('prompt_tokens_total', 0) for x in f]),
			'replay_prompt_tokens': med([x.get('prompt_tokens_total', 0) for x in r]),
			'wall_ratio_median': med([x for x in wall_r if x is not None]),
			'wall_ratio_max': max((x for x in wall_r if x is not None), default=None),
			'tokens_ratio_median': med([x for x in tok_r if x is not None]),
			'tokens_ratio_max': max((x for x in tok_r if x is not None), default=None),
			'first_correct': sum(1 for x in f if x.get('correct')),
			'replay_correct': sum(1 for x in r if x.get('correct')),
			'replay_sources': {k: sum(x.get('step_sources', {}).get(k, 0) for x in r)
			                   for k in sorted({k for x in r for k in x.get('step_sources', {})})},
		}
		s['pass'] = {
			'requests': s['replay_requests_max'] is not None and s['replay_requests_max'] <= TARGETS['max_requests'],
			'tokens': s['tokens_ratio_max'] is not None and s['tokens_ratio_max'] <= TARGETS['max_tokens_ratio']
			          and None not in tok_r,
			'wall': s['wall_ratio_max'] is not None and s['wall_ratio_max'] <= TARGETS['max_wall_ratio']
			        and None not in wall_r,
			'correct': s['first_correct'] == len(ps) and s['replay_correct'] == len(ps),
		}
		out[tid] = s
	return out


def _f(v, nd=2) -> str:
	if v is None:
		return '-'
	if isinstance(v, float):
		return str(int(v)) if v.is_integer() and nd <= 1 else f'{v:.{nd}f}'
	return str(v)


def render(summary: dict, meta: dict) -> str:
	pf = lambda ok: 'PASS' if ok else 'FAIL'  # noqa: E731
	lines = [
		'| task | pairs | wall s: first → replay | wall ratio (median, max) | model requests: first → replay (max) '
		'| prompt tokens: first → replay | tokens ratio (median, max) | replayed steps (source) | correct: first, replay |',
		'|---|---|---|---|---|---|---|---|---|',
	]
	for tid, s in summary.items():
		src = ', '.join(f'{k} {v}' for k, v in s['replay_sources'].items()) or '-'
		lines.append(
			f'| {tid} | {s["pairs"]} | {_f(s["first_wall_s"])} → {_f(s["replay_wall_s"])} '
			f'| {_f(s["wall_ratio_median"])}, {_f(s["wall_ratio_max"])} '
			f'| {_f(s["first_requests"], 1)} → {_f(s["replay_requests"], 1)} ({_f(s["replay_requests_max"])}) '
			f'| {_f(s["first_prompt_tokens"], 0)} → {_f(s["replay_prompt_tokens"], 0)} '
			f'| {_f(s["tokens_ratio_median"], 3)}, {_f(s["tokens_ratio_max"], 3)} | {src} '
			f'| {s["first_correct"]}/{s["pairs"]}, {s["replay_correct"]}/{s["pairs"]} |')
	lines += ['', '| target (replayed run vs its first run, every pair) | ' + ' | '.join(t for t in summary) + ' |',
	          '|---|' + '---|' * len(summary)]
	rows = [('at most 1 model request', 'requests'), ('≤ 0.2× prompt tokens', 'tokens'),
	        ('≤ 0.3× wall time', 'wall'), ('every task still correct', 'correct')]
	for label, k in rows:
		lines.append(f'| {label} | ' + ' | '.join(pf(s['pass'][k]) for s in summary.values()) + ' |')
	lines.append('')
	lines.append(
		f'Medians over {meta.get("runs")} round(s), one smoothd per round; wall = submit → final status seen; model '
		f'requests and prompt tokens (o200k_base) from the fake-LLM log; ratios are per pair (replay / first run of the '
		f'same round). Fake-LLM latency {meta.get("latency_ms")} ms. smoothd {meta.get("smoothd_version") or "?"}.')
	return '\n'.join(lines)


# =============================================================================================
# orchestrator
# =============================================================================================
def orchestrate(a) -> int:
	out_json, out_md = Path(a.out), Path(a.md)
	if a.summary_only:
		data = json.loads(out_json.read_text())
		print(render(data['summary'], data['meta']))
		return 0
	binary, why = rs.find_binary(a.smoothd_bin)
	if not binary:
		print(f'run_replay: {why}', file=sys.stderr)
		return 2
	try:
		from smooth import SmoothClient
	except ImportError:
		print('run_replay: the Python SDK smooth-py 0.4.5 is not installed in this venv: run `bash setup.sh`',
		      file=sys.stderr)
		return 2
	tasks_all = {t['id']: t for t in json.loads(Path(a.tasks_file).read_text())['tasks']}
	task_ids = a.tasks.split(',') if a.tasks else list(tasks_all)
	unknown = [t for t in task_ids if t not in tasks_all]
	if unknown:
		print(f'run_replay: unknown task(s) {unknown}; known: {list(tasks_all)}', file=sys.stderr)
		return 2
	extra_env = dict(kv.partition('=')[::2] for kv in a.smoothd_env)
	raw = HERE / 'results/raw'
	raw.mkdir(parents=True, exist_ok=True)
	stamp = time.strftime('%Y%m%d-%H%M%S')
	llm_log = raw / f'llm-{stamp}-replay.jsonl'
	py = sys.executable
	site_url = f'http://127.0.0.1:{a.site_port}'
	procs: list[subprocess.Popen] = []
	pairs: list[dict] = []
	rounds: list[dict] = []
	fixture = HERE / 'site/fixtures/resume.txt'
	a.concurrency = 1  # record, then replay: one task at a time
	try:
		if not a.no_servers:
			procs.append(subprocess.Popen(
				[py, str(HERE / 'site/serve.py'), '--port', str(a.site_port), '--log', str(raw / f'site-{stamp}.log')],
				stdout=subprocess.DEVNULL, stderr=open(raw / f'site-{stamp}.stderr', 'w')))
			procs.append(subprocess.Popen(
				[py, str(HERE / 'fake_llm.py'), '--port', str(a.llm_port), '--log', str(llm_log), '--latency-ms',
				 str(a.latency_ms), '--site-url', site_url, '--default-policy', 'smoothd'],
				stdout=subprocess.DEVNULL, stderr=open(raw / f'fake-llm-{stamp}.stderr', 'w')))
		else:
			llm_log = Path(a.llm_log)
		rbu.wait_http(f'{site_url}/healthz')
		rbu.wait_http(f'http://127.0.0.1:{a.llm_port}/healthz')
		helper_pids = [p.pid for p in procs]
		for rnd in range(a.runs):
			workdir = Path(tempfile.mkdtemp(prefix=f'smoothd-replay-r{rnd}-', dir=a.tmpdir))
			sd = rs.SmoothdProc(binary, workdir, llm_url=f'http://127.0.0.1:{a.llm_port}/v1', workers=1,
			                    extra_env=extra_env)
			rm: dict = {'round': rnd}
			sampler = None
			try:
				sd.start()
				rm['startup_s'] = round(sd.wait_healthy(a.start_timeout), 3)
				sampler = rs.ServerSampler(sd.proc.pid, sd.data_dir, a.sample_ms / 1000, a.pss_every)
				sampler.start()
				time.sleep(a.settle_s)
				with SmoothClient(api_key=sd.key, base_url=f'{sd.base}/') as client:
					file_ids = None
					for pos, tid in enumerate(task_ids):
						task = tasks_all[tid]
						needs = any(op['op'] == 'upload' for turn in task['scenario'] for op in turn)
						if needs and file_ids is None:
							with open(fixture, 'rb') as fh:
								file_ids = [client.upload_file(fh).id]
						pair = {'task_id': tid, 'round': rnd}
						for which, mode in (('first', 'record'), ('replay', 'auto')):
							run_id = f'{stamp}-replay-{tid}-{rnd}-{which}'
							m = rs.run_one(a, tid, task, run_id, client, sd, sampler, llm_log,
							               file_ids if needs else None, helper_pids, pos, features=features(tid, mode))
							pair[which] = add_replay_metrics(m, task, llm_log, sd)
							print(f'[{rnd}] {tid:<24} {which:<6} status={m.get("status")!s:<9} correct={m["correct"]!s:<5} '
							      f'wall={m.get("run_wall_s") or 0:6.2f}s requests={m["model_requests"]} '
							      f'prompt_tokens={m["prompt_tokens_total"]} sources={m["step_sources"]}'
							      + (f'  EXC {m["exception"]}' if m.get('exception') else '')
							      + (f'  ERR {str(m.get("error"))[:160]}' if m.get('error') else ''), flush=True)
						pairs.append(pair)
			except Exception as e:
				rm['error'] = f'{type(e).__name__}: {e}'
				print(f'[round {rnd}] {rm["error"]}', file=sys.stderr, flush=True)
				if rnd == 0 and not pairs:
					raise
			finally:
				if sampler is not None:
					sampler.stop_evt.set()
					sampler.join(timeout=5)
					sd.kids.update(sampler.seen)
				rm.update(sd.stop())
				keep = raw / f'smoothd-{stamp}-replay-r{rnd}.log'
				try:
					keep.write_bytes(sd.log_path.read_bytes())
					rm['log'] = str(keep.relative_to(HERE))
				except OSError:
					pass
				if not a.keep_workdirs:
					subprocess.run(['rm', '-rf', str(workdir)], check=False)
				rounds.append(rm)
	except Exception as e:
		print(f'run_replay: {type(e).__name__}: {e}', file=sys.stderr)
		if not pairs:
			rs._stop(procs)
			return 1
	finally:
		rs._stop(procs)
	meta = {'harness': 'replay', 'runs': a.runs, 'tasks': task_ids, 'latency_ms': a.latency_ms,
	        'smoothd_version': rs._smoothd_version(binary), 'started': stamp, 'rounds': rounds, 'targets': TARGETS,
	        'llm_log': str(llm_log.relative_to(HERE)) if llm_log.is_relative_to(HERE) else str(llm_log)}
	summary = summarise(pairs)
	out_json.parent.mkdir(parents=True, exist_ok=True)
	out_json.write_text(json.dumps({'meta': meta, 'summary': summary, 'pairs': pairs}, indent=1, default=str))
	md = render(summary, meta)
	out_md.write_text(md + '\n')
	print()
	print(md)
	print(f'\nwrote {out_json} and {out_md}')
	return 0 if all(s['pass'][k] for s in summary.values() for k in s['pass']) else 1


def build_parser():
	ap = rs.build_parser()
	ap.description = __doc__
	ap.set_defaults(runs=3, warmup=0, out=str(HERE / 'results/replay.json'))
	ap.add_argument('--md', default=str(HERE / 'results/replay.md'), help='where the markdown tables go')
	return ap


def main() -> int:
	return orchestrate(build_parser().parse_args())


if __name__ == '__main__':
	raise SystemExit(main())
