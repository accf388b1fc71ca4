"""Scale-out and failure recovery with real processes on one PostgreSQL: API processes
(`serve --no-workers`) and worker processes (`worker`), driven through the real smooth-py SDK
against both API processes. A worker is killed with SIGKILL mid-run; another is stopped with
SIGTERM. Short leases (SMOOTHD_LEASE_SECONDS) keep it quick.

Checks, per the recovery rules: a session that acted in the browser on the killed worker ends
`failed` "worker lost" with one `task_ended` event; one that was claimed but never acted is
claimed again and completes; nothing stays running; every task's final state is written
exactly once (the surviving workers' `finished` and `reaped` counters add up to the number of
tasks); every client event is answered exactly once and timestamps strictly increase.
"""

import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from smoothd_support import (
    PostgresDb,
    Site,
    _free_port,
    _smoothd_bin,
    _tail,
    chromium_browser_pids,
    close_client,
    make_client,
    wait_final,
    wait_status,
)

pytestmark = [pytest.mark.usefixtures("browser"), pytest.mark.timeout(300)]

LEASE_SECONDS = 4
DRAIN_SECONDS = 5
# A process must exit this long after SIGTERM at most: the drain deadline plus start-up slack
# for Chromium shutdown and the database pool (never an assertion about speed).
EXIT_DEADLINE = DRAIN_SECONDS + 20
READY_TIMEOUT = 60


class Proc:
    """One smoothd process of a cluster: `serve --no-workers` or `worker`."""

    def __init__(self, cluster: "Cluster", role: str, name: str) -> None:
        self.cluster, self.role, self.name = cluster, role, name
        self.port = _free_port()
        self.metrics_port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stderr_path = cluster.tmp / f"{name}.stderr"
        args = ["serve", "--no-workers"] if role == "api" else ["worker"]
        env = cluster.env()
        env.update(
            SMOOTHD_LISTEN=f"127.0.0.1:{self.port}",
            SMOOTHD_PUBLIC_URL=self.base,
            SMOOTHD_METRICS_LISTEN=f"127.0.0.1:{self.metrics_port}",
        )
        self.proc = subprocess.Popen(
            [cluster.bin, *args],
            cwd=cluster.tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.stderr_path, "wb"),
        )
        self.worker_id = None
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited early:\n{self.stderr_tail()}"
            try:
                url = f"{self.base}/readyz" if self.role == "api" else f"http://127.0.0.1:{self.metrics_port}/healthz"
                if requests.get(url, timeout=2).status_code == 200:
                    if self.role == "api":
                        return
                    m = re.search(r'"worker\.id":"(wrk_[A-Za-z0-9]+)"', self.stderr_path.read_text(errors="replace"))
                    if m:
                        self.worker_id = m.group(1)
                        return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready in {READY_TIMEOUT}s:\n{self.stderr_tail()}")

    def metrics(self) -> str:
        r = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        assert r.status_code == 200, r.text
        return r.text

    def sigterm(self) -> int | None:
        """SIGTERM; the exit code, or None if it did not exit within EXIT_DEADLINE."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(EXIT_DEADLINE)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stderr_tail(self) -> str:
        return _tail(self.stderr_path)


class Cluster:
    """Processes sharing one fresh PostgreSQL database, one data folder and one API key."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = _smoothd_bin()
        self.pg = PostgresDb()
        self.key = "smd_scale_" + os.urandom(16).hex()
        self.procs: list[Proc] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMOOTHD_") and k != "RUST_LOG"}
        env.update(
            SMOOTHD_DATA_DIR=str(self.tmp / "data"),
            SMOOTHD_DATABASE_URL=self.pg.url,
            SMOOTHD_API_KEY=self.key,
            SMOOTHD_WORKERS="2",
            SMOOTHD_LEASE_SECONDS=str(LEASE_SECONDS),
            SMOOTHD_HEARTBEAT_SECONDS="1",
            SMOOTHD_QUEUE_POLL_SECONDS="1",
            SMOOTHD_DRAIN_SECONDS=str(DRAIN_SECONDS),
            SMOOTHD_CLOSE_GRACE_SECONDS="2",
            SMOOTHD_LOG="info",
            SMOOTHD_CHROMIUM_ARGS='["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]',
        )
        if os.environ.get("SMOOTHD_CHROMIUM"):
            env["SMOOTHD_CHROMIUM"] = os.environ["SMOOTHD_CHROMIUM"]
        return env

    def start(self, role: str, name: str) -> Proc:
        p = Proc(self, role, name)
        self.procs.append(p)
        return p

    def sql(self, query: str) -> list[list[str]]:
        r = subprocess.run(
            ["psql", "-w", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", self.pg.url, "-c", query],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def request(self, api: Proc, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, api.base + path, headers={"apikey": self.key}, timeout=30, **kw)

    def close(self) -> None:
        for p in self.procs:
            p.kill()
        self.pg.close()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def scale_site():
    s = Site()
    yield s
    s.close()


def metric(text: str, series: str) -> float:
    """Sum of every sample of `series` (a name, or a name with its exact `{labels}`)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        if key == series or ("{" not in series and key.split("{", 1)[0] == series):
            total += float(value)
    return total


def check_events(cluster: Cluster, api: Proc, tid: str) -> list[dict]:
    """Every server event of `tid`, read through `api`: strictly increasing timestamps, unique
    ids, and exactly one answer per client event. Returns the events."""
    r = cluster.request(api, "GET", f"/v1/task/{tid}", params={"event_t": 0})
    assert r.status_code == 200, f"{tid}: {r.status_code} {r.text}"
    events = r.json()["r"]["events"] or []
    ts = [e["timestamp"] for e in events]
    assert ts == sorted(ts) and len(set(ts)) == len(ts), f"{tid}: timestamps not strictly increasing: {ts}"
    asked = [row[0] for row in cluster.sql(f"SELECT id FROM task_events WHERE task_id = '{tid}' AND direction = 'in'")]
    for eid in asked:
        answers = [e for e in events if e["id"] == eid]
        assert len(answers) == 1, f"{tid}: client event {eid} answered {len(answers)} times: {events}"
        assert answers[0]["payload"]["code"] == 200, f"{tid}: {answers[0]}"
    return events


def drive(client, site: Site, started: threading.Event | None = None) -> str:
    """A session through the SDK: two pages, two scripts, a graceful close."""
    s = client.session()
    s.goto(site.url("/index.html"))
    if started is not None:
        started.set()
    assert s.evaluate_js("document.title").output == "Conformance home"
    s.goto(site.url("/second.html"))
    assert s.evaluate_js("document.querySelector('p').textContent").output == "two"
    assert s.close(force=False) is True
    return s.id()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def test_kill_9_worker_mid_run(cluster, scale_site):
    api1 = cluster.start("api", "api1")
    api2 = cluster.start("api", "api2")
    # The victim starts alone, so the first two sessions are its.
    victim = cluster.start("worker", "victim")
    c1 = make_client(api1.base + "/", cluster.key)
    c2 = make_client(api2.base + "/", cluster.key)
    try:
        acted = c1.session()
        idle = c2.session()
        for s in (acted, idle):
            wait_status(_Api(cluster, api1), s.id(), "running", timeout=60)
        owners = dict(cluster.sql(f"SELECT id, worker_id FROM tasks WHERE id IN ('{acted.id()}', '{idle.id()}')"))
        assert owners == {acted.id(): victim.worker_id, idle.id(): victim.worker_id}, owners
        # One acts in the browser; the other is claimed but never acts.
        acted.goto(scale_site.url("/index.html"))

        w2 = cluster.start("worker", "w2")
        w3 = cluster.start("worker", "w3")
        # A batch across both API processes: more sessions than the survivors have slots, so
        # some wait in the queue while the victim dies.
        batch = 6
        started = [threading.Event() for _ in range(batch)]
        with ThreadPoolExecutor(batch + 1) as pool:
            futures = [
                pool.submit(drive, (c1, c2)[i % 2], scale_site, started[i]) for i in range(batch)
            ]
            # Mid-run: once sessions are acting on the survivors, kill the victim.
            deadline = time.monotonic() + 60
            while sum(e.is_set() for e in started) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sum(e.is_set() for e in started) >= 2, "no batch session got going"
            browsers = chromium_browser_pids(victim.pid)
            assert browsers, "the victim runs no Chromium"
            victim.kill()
            # A SIGKILLed process cannot close its Chromium: the parent-death signal set at
            # launch takes it down (no orphan keeps the sessions' pages and memory).
            deadline = time.monotonic() + 10
            while any(_alive(p) for p in browsers) and time.monotonic() < deadline:
                time.sleep(0.1)
            orphans = [p for p in browsers if _alive(p)]
            for pid in orphans:
                os.kill(pid, signal.SIGKILL)
            assert orphans == [], f"Chromium outlived its SIGKILLed worker: {orphans}"
            # The idle session's client carries on: its commands wait in the inbox until
            # another worker re-claims the session (its lease expires first).
            idle_run = pool.submit(_finish_idle, idle, scale_site)
            batch_ids = [f.result(timeout=240) for f in futures]
            idle_run.result(timeout=240)

        # The session that acted on the dead worker: failed "worker lost", one task_ended.
        final = wait_final(_Api(cluster, api2), acted.id(), timeout=120)
        assert final["status"] == "failed", final
        assert "worker lost" in (final.get("error") or ""), final
        ended = [e for e in check_events(cluster, api2, acted.id()) if e["name"] == "task_ended"]
        assert len(ended) == 1 and ended[0]["payload"]["status"] == "failed", ended

        # The one that never acted: claimed again by a survivor, and completed.
        final = wait_final(_Api(cluster, api1), idle.id(), timeout=60)
        assert final["status"] == "done", final
        (attempt, owner), = cluster.sql(f"SELECT attempt, worker_id FROM tasks WHERE id = '{idle.id()}'")
        assert int(attempt) == 2 and owner in (w2.worker_id, w3.worker_id), (attempt, owner)

        all_ids = [acted.id(), idle.id(), *batch_ids]
        for i, tid in enumerate(batch_ids):
            # Read through the API process the session was not driven through.
            other = (api2, api1)[i % 2]
            assert wait_final(_Api(cluster, other), tid, timeout=60)["status"] == "done"
            check_events(cluster, other, tid)
        check_events(cluster, api1, idle.id())

        # Nothing is left running or waiting.
        assert cluster.sql("SELECT id, status FROM tasks WHERE status IN ('waiting', 'running')") == []
        # Exactly once: the victim finished nothing, so the survivors' final writes (fenced:
        # counted only when they took effect) and reaps add up to every task.
        written = sum(metric(w.metrics(), "smoothd_worker_tasks_finished_total") for w in (w2, w3))
        reaped = sum(metric(w.metrics(), "smoothd_tasks_reaped_total") for w in (w2, w3))
        assert (written, reaped) == (len(all_ids) - 1, 1), (written, reaped)
        retries = sum(metric(w.metrics(), 'smoothd_claims_total{attempt="retry"}') for w in (w2, w3))
        assert retries == 1, retries
    finally:
        close_client(c1)
        close_client(c2)
    for p in (api1, api2, w2, w3):
        rc = p.sigterm()
        assert rc == 0, f"{p.name} exited with {rc} after SIGTERM:\n{p.stderr_tail()}"


def _finish_idle(session, site: Site) -> None:
    session.goto(site.url("/second.html"))
    assert session.evaluate_js("document.title").output == "Second page"
    assert session.close(force=False) is True


class _Api:
    """Adapts a cluster API process to smoothd_support's wait helpers."""

    def __init__(self, cluster: Cluster, api: Proc) -> None:
        self.cluster, self.api = cluster, api

    def request(self, method, path, key="default", **kw):
        kw.pop("timeout", None)
        return self.cluster.request(self.api, method, path, **kw)


def test_sigterm_drains_and_exits(cluster, scale_site):
    api = cluster.start("api", "api")
    w1 = cluster.start("worker", "w1")
    client = make_client(api.base + "/", cluster.key)
    try:
        acted = client.session()
        idle = client.session()
        for s in (acted, idle):
            wait_status(_Api(cluster, api), s.id(), "running", timeout=60)
        acted.goto(scale_site.url("/index.html"))
        # The worker's two slots are taken: this one waits in the queue.
        queued = client.session()
        time.sleep(0.5)
        assert wait_status(_Api(cluster, api), queued.id(), "waiting", timeout=5)

        rc = w1.sigterm()
        assert rc == 0, f"worker exited with {rc} after SIGTERM:\n{w1.stderr_tail()}"
        # Running sessions got a true final state before the process exited.
        for s in (acted, idle):
            final = wait_final(_Api(cluster, api), s.id(), timeout=5)
            assert final["status"] == "failed" and "shut down" in (final.get("error") or ""), final
        # A draining worker claims nothing new.
        assert wait_status(_Api(cluster, api), queued.id(), "waiting", timeout=5)

        # Another worker picks the waiting session up and it completes.
        w2 = cluster.start("worker", "w2")
        wait_status(_Api(cluster, api), queued.id(), "running", timeout=60)
        queued.goto(scale_site.url("/index.html"))
        assert queued.close(force=False) is True
        assert wait_final(_Api(cluster, api), queued.id(), timeout=30)["status"] == "done"
        for tid in (acted.id(), idle.id(), queued.id()):
            check_events(cluster, api, tid)
        assert cluster.sql("SELECT id FROM tasks WHERE status IN ('waiting', 'running')") == []
    finally:
        close_client(client)
    for p in (api, w2):
        rc = p.sigterm()
        assert rc == 0, f"{p.name} exited with {rc} after SIGTERM:\n{p.stderr_tail()}"


def test_killed_chromium_counts_as_a_crash(cluster, scale_site):
    api = cluster.start("api", "api")
    w = cluster.start("worker", "w")
    client = make_client(api.base + "/", cluster.key)
    try:
        s = client.session()
        wait_status(_Api(cluster, api), s.id(), "running", timeout=60)
        s.goto(scale_site.url("/index.html"))
        before = w.metrics()
        assert metric(before, "smoothd_browser_processes") >= 1, before
        assert metric(before, "smoothd_browser_crashes_total") == 0, before
        pids = chromium_browser_pids(w.pid)
        assert pids, "the worker runs no Chromium"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while metric(w.metrics(), "smoothd_browser_crashes_total") < len(pids):
            assert time.monotonic() < deadline, w.metrics()
            time.sleep(0.1)
        after = w.metrics()
        assert metric(after, "smoothd_browser_processes") == metric(before, "smoothd_browser_processes") - len(pids)
        # The session notices by itself, without a command, and fails; nothing stays running.
        final = wait_final(_Api(cluster, api), s.id(), timeout=30)
        assert final["status"] == "failed" and "browser crashed" in (final.get("error") or ""), final
    finally:
        close_client(client)
    for p in (api, w):
        assert p.sigterm() == 0, p.stderr_tail()
