"""PostgreSQL restarted under load. A private PostgreSQL cluster of this test (initdb + pg_ctl
in a temp folder, never the shared server on 5432) backs 2 API processes and 2 worker
processes. A stream of agent tasks is submitted over raw HTTP (to see every answer, which the
SDK would hide behind retries or exceptions) while PostgreSQL is stopped (`pg_ctl stop -m
fast`, every connection cut) and started again, without restarting smoothd.

Each worker talks to a scripted model of its own, so every model request says which process
ran the task and at which step: a task run twice at the same time would show interleaved
requests. Both tests check: requests during the outage got an answer within the pool's
acquire deadline, either a success or a 503 with `{"detail"}`, never a hang or another error;
every accepted task ends in one true final state, written once (the workers' fenced-write
counters add up); no task ran twice at the same time; after the restart new submissions
succeed through both API processes (also through the SDK) and an idle worker wakes on
LISTEN/NOTIFY again (the slow poll is set far longer than the wait allowed).

An outage shorter than the lease: every task ends `done` with all its step events, none runs
again. An outage longer than the lease (two long tasks, one that acted in the browser, span
it): a worker that cannot renew a lease loses the task, as the lease rules say, so running
tasks stop themselves before the lease runs out; after the restart those that never acted
run again (after, never alongside, the first run) and those that acted end `failed` "worker
lost" with one `task_ended` event; no model request of a task arrives after it turned final."""

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from scripted_llm import ScriptedLLM
from smoothd_support import _free_port, _smoothd_bin, _tail, close_client, llm_env, make_client

pytestmark = [pytest.mark.usefixtures("browser"), pytest.mark.timeout(600)]

LEASE_SECONDS = 20
HEARTBEAT_SECONDS = 2
# Longer than the pool's acquire deadline (set to 10 s below), so some requests must give up with a 503;
# shorter than the lease, so running tasks ride it out.
OUTAGE_SECONDS = 12
# Idle workers re-check the queue this rarely: after the restart only NOTIFY wakes them fast.
QUEUE_POLL_SECONDS = 60
ACQUIRE_DEADLINE = 10
READY_TIMEOUT = 60


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail(f"{name} not found under /usr/lib/postgresql (Debian: apt-get install postgresql)")
    return found[-1]


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:<free port>, owned by this test."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="smoothd-pg-"))
        self.data = self.tmp / "data"
        self.port = _free_port()
        self.log = self.tmp / "postgres.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root.
            shutil.chown(self.tmp, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def _run(self, *args: str, timeout: float = 120) -> None:
        r = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"{args[0]} failed ({r.returncode}): {r.stderr}\n{_tail(self.log)}"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def sql(self, query: str) -> list[list[str]]:
        r = subprocess.run(
            ["psql", "-w", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", self.url, "-c", query],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Proc:
    def __init__(self, tmp: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.port = _free_port()
        self.metrics_port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stderr_path = tmp / f"{name}.stderr"
        env = {
            **env,
            "SMOOTHD_LISTEN": f"127.0.0.1:{self.port}",
            "SMOOTHD_PUBLIC_URL": self.base,
            "SMOOTHD_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
            "SMOOTHD_DATA_DIR": str(tmp / f"data-{name}"),
        }
        self.proc = subprocess.Popen(
            [_smoothd_bin(), *args],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.stderr_path, "wb"),
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert self.proc.poll() is None, f"{name} exited:\n{_tail(self.stderr_path)}"
            try:
                if requests.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2).status_code == 200:
                    if args[0] == "serve" or "workers started" in self.stderr_path.read_text(errors="replace"):
                        break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"{name} not ready:\n{_tail(self.stderr_path)}"
            time.sleep(0.2)

    def metric(self, series: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith("#") and " " in line:
                key, value = line.rsplit(" ", 1)
                if key.split("{", 1)[0] == series:
                    total += float(value)
        return total

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


def three_steps(n: int) -> list:
    """Two waits, then done: a task that runs a few seconds without acting in the browser."""
    return waits(n, 2, 1)


def waits(n: int, count: int, seconds: float) -> list:
    """`count` waits of `seconds`, then done with "finished n"."""
    return [[{"op": "wait", "seconds": seconds}] for _ in range(count)] + [[{"op": "done", "output": f"finished {n}"}]]


class Load:
    """Submits tasks to the API processes in turn, one at a time, recording every answer."""

    def __init__(self, apis: list[Proc], key: str, llms: list[ScriptedLLM], start_url: str | None = None) -> None:
        # With `start_url`, every third task opens it first: it has acted in the browser, so
        # it must never run again.
        self.apis, self.key, self.llms, self.start_url = apis, key, llms, start_url
        self.acting: set[int] = set()
        self.answers: list[dict] = []  # {n, api, sent, took, status, body, error}
        self.accepted: dict[str, int] = {}  # task id -> n
        self.stop = threading.Event()
        self.every = 0.3
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.n = 0

    def submit(self, turns: list | None = None, acting: bool | None = None) -> dict:
        """One task: `turns` (default: three_steps) of script `load-<n>`; `acting`: whether it
        opens `start_url` first (default: every third task)."""
        n = self.n
        self.n += 1
        name = f"load-{n}"
        turns = turns or three_steps(n)
        for llm in self.llms:
            with llm._lock:
                llm._scripts[name] = turns
        api = self.apis[n % len(self.apis)]
        body = {"task": f"Wait a little [script:{name}]", "max_steps": len(turns) + 5}
        if acting is None:
            acting = n % 3 == 2
        if self.start_url and acting:
            body["url"] = self.start_url
            self.acting.add(n)
        sent = time.monotonic()
        answer = {"n": n, "api": api.name, "sent": sent, "status": None, "body": None, "error": None}
        try:
            r = requests.post(api.base + "/v1/task", headers={"apikey": self.key}, json=body, timeout=60)
            answer["status"] = r.status_code
            try:
                answer["body"] = r.json()
            except ValueError:
                answer["body"] = r.text
            if r.status_code == 200:
                self.accepted[r.json()["r"]["id"]] = n
        except requests.RequestException as e:
            answer["error"] = repr(e)
        answer["took"] = time.monotonic() - sent
        self.answers.append(answer)
        return answer

    def _run(self) -> None:
        while not self.stop.is_set():
            self.submit()
            time.sleep(self.every)


def runs_of(llm_requests: list[tuple[float, str, int]]) -> list[list[tuple[float, str, int]]]:
    """Splits one task's model requests (time, worker, step) into runs: a run starts at step 0
    and its steps strictly increase, all from one worker."""
    runs: list[list[tuple[float, str, int]]] = []
    for req in sorted(llm_requests):
        if req[2] == 0 or not runs:
            runs.append([req])
        else:
            runs[-1].append(req)
    return runs


def cluster_env(pg: PrivatePostgres, key: str, lease: int, heartbeat: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMOOTHD_") and k != "RUST_LOG"}
    env.update(
        SMOOTHD_DATABASE_URL=pg.url,
        SMOOTHD_API_KEY=key,
        SMOOTHD_WORKERS="2",
        SMOOTHD_LEASE_SECONDS=str(lease),
        SMOOTHD_HEARTBEAT_SECONDS=str(heartbeat),
        SMOOTHD_QUEUE_POLL_SECONDS=str(QUEUE_POLL_SECONDS),
        SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS=str(ACQUIRE_DEADLINE),
        SMOOTHD_LOG="info",
        SMOOTHD_CHROMIUM_ARGS='["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]',
    )
    if os.environ.get("SMOOTHD_CHROMIUM"):
        env["SMOOTHD_CHROMIUM"] = os.environ["SMOOTHD_CHROMIUM"]
    return env


def start_cluster(tmp_path: Path, env: dict[str, str], llms: list[ScriptedLLM], procs: list[Proc]):
    """2 API processes, and one worker process per scripted model."""
    apis = []
    for name in ("api1", "api2"):
        p = Proc(tmp_path, name, ["serve", "--no-workers"], env)
        procs.append(p)
        apis.append(p)
    workers = []
    # The scripted tasks wait again and again on an unchanged page on purpose (to be running
    # while the database is away): the loop guard would rightly stop them, so it is off here.
    quiet_guard = {"SMOOTHD_AGENT_LOOP_REPEATS": "0", "SMOOTHD_AGENT_STALL_STEPS": "0", "SMOOTHD_AGENT_LOOP_ALTERNATION": "0"}
    for i, llm in enumerate(llms):
        w = Proc(tmp_path, f"w{i + 1}", ["worker"], {**env, **llm_env(llm.base_url), **quiet_guard})
        procs.append(w)
        workers.append(w)
    return apis, workers


def check_answers(load: Load, outage_start: float, outage_end: float) -> list[dict]:
    """Every answer is a success or a clean 503 with {"detail"} within the acquire deadline;
    some were refused during the outage; all after it succeeded, on both API processes.
    Returns the refused ones."""
    for a in load.answers:
        assert a["error"] is None, f"submission {a['n']} got no answer: {a}"
        assert a["took"] < ACQUIRE_DEADLINE + 5, f"submission {a['n']} took {a['took']:.1f}s: {a}"
        if a["status"] != 200:
            assert a["status"] == 503, a
            assert isinstance(a["body"], dict) and isinstance(a["body"].get("detail"), str), a
    refused = [a for a in load.answers if a["status"] == 503]
    during = [a for a in load.answers if outage_start <= a["sent"] + a["took"] and a["sent"] <= outage_end]
    assert refused, f"no submission was refused during the outage: {during}"
    after = [a for a in load.answers if a["sent"] > outage_end + 1]
    assert after and all(a["status"] == 200 for a in after), [a for a in after if a["status"] != 200]
    assert {a["api"] for a in after} == {"api1", "api2"}
    return refused


def wait_all_final(pg: PrivatePostgres) -> dict[str, list[str]]:
    """Waits until nothing is waiting or running; every task: id -> [status, attempt, error]."""
    deadline = time.monotonic() + 240
    while pg.sql("SELECT count(*) FROM tasks WHERE status IN ('waiting', 'running')")[0][0] != "0":
        assert time.monotonic() < deadline, pg.sql(
            "SELECT id, status, attempt FROM tasks WHERE status IN ('waiting', 'running')"
        )
        time.sleep(1)
    return {r[0]: r[1:] for r in pg.sql("SELECT id, status, attempt, COALESCE(error, '') FROM tasks")}


def check_runs(load: Load, workers: list[Proc], llms: list[ScriptedLLM], rows: dict, pg: PrivatePostgres) -> int:
    """No task ran twice at the same time: per task, its model requests form runs (step 0 up,
    one worker each) that never overlap, no more runs than attempts, and none after the task
    turned final (a run left going after its task was failed). Returns how many tasks ran more
    than once (one after the other)."""
    twice = 0
    finished = {r[0]: int(r[1]) / 1000 for r in pg.sql("SELECT id, finished_at FROM tasks")}
    for tid, n in load.accepted.items():
        reqs = []
        for w, llm in zip(workers, llms):
            for rec in llm._records(f"load-{n}"):
                step = sum(1 for m in rec.body["messages"] if m.get("role") == "assistant")
                reqs.append((rec.at, w.name, step))
        runs = runs_of(reqs)
        for run in runs:
            assert [st for _, _, st in run] == list(range(len(run))), f"{tid}: interleaved runs {sorted(reqs)}"
            assert len({w for _, w, _ in run}) == 1, f"{tid}: one run on two workers {sorted(reqs)}"
        twice += len(runs) > 1
        assert len(runs) <= int(rows[tid][1]), f"{tid}: {len(runs)} runs, attempt {rows[tid][1]}"
        late = [r for r in reqs if r[0] > finished[tid] + 0.2]
        assert not late, f"{tid}: model requests after the task was final at {finished[tid]}: {late}"
    return twice


def check_notify(pg: PrivatePostgres, api: Proc, key: str, llms: list[ScriptedLLM]) -> None:
    """LISTEN/NOTIFY reconnected: an idle worker claims a new task long before its slow poll."""
    name = f"notify-{api.name}"
    for llm in llms:
        with llm._lock:
            llm._scripts[name] = three_steps(-2)
    r = requests.post(
        api.base + "/v1/task",
        headers={"apikey": key},
        json={"task": f"Wake up [script:{name}]", "max_steps": 8},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    tid = r.json()["r"]["id"]
    deadline = time.monotonic() + QUEUE_POLL_SECONDS
    while pg.sql(f"SELECT status FROM tasks WHERE id = '{tid}'")[0][0] == "waiting":
        assert time.monotonic() < deadline, "no worker woke for a new task"
        time.sleep(0.1)
    ((created, started),) = pg.sql(f"SELECT created_at, started_at FROM tasks WHERE id = '{tid}'")
    assert int(started) - int(created) < 5000, f"claimed {int(started) - int(created)} ms after submission"


def run_sdk(apis: list[Proc], key: str, llms: list[ScriptedLLM]) -> None:
    """A task through the real SDK on each API process, without restarting smoothd."""
    for api in apis:
        name = f"sdk-{api.name}"
        for llm in llms:
            with llm._lock:
                llm._scripts[name] = three_steps(-1)
        client = make_client(api.base + "/", key)
        try:
            res = client.run(f"After the restart [script:{name}]", max_steps=8).result(timeout=120)
            assert res.status == "done" and res.output == "finished -1", res
        finally:
            close_client(client)


def events_of(api: Proc, key: str, tid: str) -> dict:
    r = requests.get(api.base + f"/v1/task/{tid}", headers={"apikey": key}, params={"event_t": 0}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()["r"]
    ts = [e["timestamp"] for e in body["events"] or []]
    assert ts == sorted(ts) and len(set(ts)) == len(ts), ts
    return body


def test_postgres_restart_under_load(tmp_path, site):
    """An outage shorter than the lease: running tasks ride it out and nothing runs again."""
    pg = PrivatePostgres()
    llms = [ScriptedLLM(), ScriptedLLM()]
    key = "smd_pgr_" + os.urandom(16).hex()
    procs: list[Proc] = []
    try:
        (api1, api2), workers = start_cluster(tmp_path, cluster_env(pg, key, LEASE_SECONDS, HEARTBEAT_SECONDS), llms, procs)
        pids = [p.proc.pid for p in procs]
        load = Load([api1, api2], key, llms)
        load.thread.start()
        # Load first, so tasks are running and waiting when the database goes away.
        time.sleep(8)
        running_before = pg.sql("SELECT count(*) FROM tasks WHERE status = 'running'")[0][0]
        outage_start = time.monotonic()
        pg.stop("fast")
        time.sleep(OUTAGE_SECONDS)
        pg.start()
        outage_end = time.monotonic()
        # Keep submitting after the restart.
        time.sleep(12)
        load.stop.set()
        load.thread.join(90)
        assert not load.thread.is_alive(), "a submission hung"
        refused = check_answers(load, outage_start, outage_end)
        run_sdk([api1, api2], key, llms)

        # Every accepted task ends done, once, with all its events.
        rows = wait_all_final(pg)
        not_done = {tid: rows[tid] for tid in load.accepted if rows[tid][0] != "done"}
        assert not not_done, f"accepted tasks that did not finish done: {not_done}"
        for tid, n in load.accepted.items():
            body = events_of(api1, key, tid)
            assert body["status"] == "done" and body["output"] == f"finished {n}", body
            steps = [e for e in body["events"] or [] if e["name"] == "step"]
            assert len(steps) == 3, f"{tid}: {body['events']}"
        written = sum(w.metric("smoothd_worker_tasks_finished_total") for w in workers)
        reaped = sum(p.metric("smoothd_tasks_reaped_total") for p in [*workers, api1, api2])
        assert (written, reaped) == (len(rows), 0), (written, reaped, len(rows))
        twice = check_runs(load, workers, llms, rows, pg)
        assert twice == 0, f"{twice} tasks ran again although the outage was shorter than the lease"
        check_notify(pg, api2, key, llms)

        assert [p.proc.pid for p in procs] == pids and all(p.proc.poll() is None for p in procs)
        print(
            f"\nsubmitted {len(load.answers)}, accepted {len(load.accepted)}, refused (503) {len(refused)}, "
            f"running at the stop {running_before}, slowest answer {max(a['took'] for a in load.answers):.1f}s"
        )
    finally:
        for p in procs:
            p.stop()
        for llm in llms:
            llm.close()
        pg.close()


def test_outage_longer_than_the_lease(tmp_path, site):
    """An outage longer than the lease: a running task is stopped before its lease runs out,
    so when the database is back no other worker can run it at the same time; it is claimed
    again if it never acted in the browser, else failed "worker lost" with one task_ended."""
    lease, heartbeat = 8, 1
    pg = PrivatePostgres()
    llms = [ScriptedLLM(), ScriptedLLM()]
    key = "smd_pgr_" + os.urandom(16).hex()
    procs: list[Proc] = []
    try:
        (api1, api2), workers = start_cluster(tmp_path, cluster_env(pg, key, lease, heartbeat), llms, procs)
        load = Load([api1, api2], key, llms, start_url=site.url("/index.html"))
        load.every = 1.0
        # Two long tasks (about 24 s), one of which acts in the browser, are running when the
        # database goes away, and still would be when it is back: a worker that kept going
        # without its lease would overlap the re-claimed run, or act after the task failed.
        long_tasks = {}
        for acting in (False, True):
            n = load.n
            a = load.submit(waits(n, 12, 2), acting=acting)
            assert a["status"] == 200, a
            long_tasks[a["body"]["r"]["id"]] = acting
        deadline = time.monotonic() + 60
        while pg.sql("SELECT count(*) FROM tasks WHERE status = 'running'")[0][0] != "2":
            assert time.monotonic() < deadline, "the long tasks did not start"
            time.sleep(0.2)
        # A first model request each, so they are under way.
        time.sleep(3)
        load.thread.start()
        time.sleep(3)
        stopped_at_ms = int(time.time() * 1000)
        outage_start = time.monotonic()
        pg.stop("fast")
        time.sleep(lease + 6)
        pg.start()
        outage_end = time.monotonic()
        time.sleep(10)
        load.stop.set()
        load.thread.join(90)
        assert not load.thread.is_alive(), "a submission hung"
        refused = check_answers(load, outage_start, outage_end)

        rows = wait_all_final(pg)
        for tid, acting in long_tasks.items():
            status, attempt, error = rows[tid]
            if acting:
                assert status == "failed" and "worker lost" in error, (tid, rows[tid])
            else:
                assert status == "done" and attempt == "2", (tid, rows[tid])
        # Tasks claimed before the database stopped that had not finished by then.
        running = {
            r[0]
            for r in pg.sql(
                f"SELECT id FROM tasks WHERE started_at <= {stopped_at_ms} "
                f"AND (finished_at IS NULL OR finished_at >= {stopped_at_ms})"
            )
        }
        assert running, "no task was running when the database stopped"
        twice = check_runs(load, workers, llms, rows, pg)
        lost = 0
        for tid, n in load.accepted.items():
            status, attempt, error = rows[tid]
            body = events_of(api2, key, tid)
            ended = [e for e in body["events"] or [] if e["name"] == "task_ended"]
            if status == "failed":
                # Only a task that acted and was running when the database went away.
                assert n in load.acting and tid in running and "worker lost" in error, (tid, n, rows[tid])
                assert len(ended) == 1 and ended[0]["payload"]["status"] == "failed", body["events"]
                lost += 1
            else:
                assert status == "done" and body["output"] == f"finished {n}", (tid, rows[tid], body)
                assert ended == [], body["events"]
                assert int(attempt) == 1 or tid in running, (tid, rows[tid])
        written = sum(w.metric("smoothd_worker_tasks_finished_total") for w in workers)
        # API processes reap too (an API-only deployment must), so a lost task may be reaped by
        # either kind of process.
        reaped = sum(p.metric("smoothd_tasks_reaped_total") for p in [*workers, api1, api2])
        assert written + reaped == len(rows) and reaped == lost, (written, reaped, lost, len(rows))
        run_sdk([api1, api2], key, llms)
        check_notify(pg, api1, key, llms)
        assert all(p.proc.poll() is None for p in procs)
        print(
            f"\nsubmitted {len(load.answers)}, accepted {len(load.accepted)}, refused (503) {len(refused)}, "
            f"running at the stop {len(running)}, re-run after the restart {twice}, failed worker lost {lost}"
        )
    finally:
        for p in procs:
            p.stop()
        for llm in llms:
            llm.close()
        pg.close()
