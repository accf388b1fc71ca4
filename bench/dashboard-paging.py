#!/usr/bin/env python3
"""The dashboard's task list with 100k tasks: a real `smoothd serve` (SQLite and PostgreSQL), one
key owning 100,000 tasks (copied in SQL from one real task), timed through
GET /dashboard/api/tasks with the session cookie. Every time is reported as a ratio to the first
page measured in the same run (the machine is shared and noisy). Also times the same deep page as
SQL OFFSET, what keyset paging replaces.

    cargo build -p smoothd && .venv-test/bin/python bench/dashboard-paging.py [sqlite|postgres ...]
"""

import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "conformance"))
os.environ.setdefault("SMOOTH_TELEMETRY", "off")

import requests  # noqa: E402

from smoothd_support import Server  # noqa: E402

N = 100_000
PAGE = 50
REPS = 15
COLS = (
    "owner, kind, status, request, device, output, error, credits_used, created_at, started_at, finished_at, "
    "attempt, max_attempts, worker_id, lease_expires_at, cancel_requested, effects_started, last_event_t, "
    "acked_event_t, live_token, recording, downloads, data_deleted_at"
)


def fill(srv: Server, template: str) -> None:
    # Tasks 1 ms apart going back in time; every 100th failed; one rare word on the oldest.
    sel = COLS.replace("status,", "CASE WHEN x % 100 = 0 THEN 'failed' ELSE 'done' END,").replace(
        "request,", "CASE WHEN x = {n} THEN replace(request, 'bench', 'needle bench') ELSE request END,"
    ).replace("created_at,", "created_at - x,").format(n=N)
    if srv.backend == "sqlite":
        db = sqlite3.connect(srv.db_url.removeprefix("sqlite://"))
        db.execute(
            f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {N}) "
            f"INSERT INTO tasks (id, {COLS}) SELECT 'tsk_b' || printf('%07d', x), {sel} FROM tasks, c WHERE id = ?",
            (template,),
        )
        db.commit()
        db.execute("ANALYZE")
        db.close()
    else:
        sql = (
            f"INSERT INTO tasks (id, {COLS}) SELECT 'tsk_b' || lpad(x::text, 7, '0'), {sel} "
            f"FROM tasks, generate_series(1, {N}) AS x WHERE id = '{template}'; ANALYZE tasks;"
        )
        subprocess.run(["psql", "-w", "-X", "-q", "-v", "ON_ERROR_STOP=1", srv.db_url, "-c", sql], check=True)


def timed(s: requests.Session, url: str, params: dict) -> tuple[float, dict]:
    times = []
    body = {}
    for _ in range(REPS):
        t0 = time.perf_counter()
        r = s.get(url, params=params, timeout=60)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        body = r.json()
    return statistics.median(times), body


def sql_ms(srv: Server, owner: str, offset: int | None, cursor: tuple[int, str] | None) -> float:
    cond = "owner = '%s'" % owner
    if cursor:
        cond += f" AND (created_at < {cursor[0]} OR (created_at = {cursor[0]} AND id < '{cursor[1]}'))"
    q = f"SELECT * FROM tasks WHERE {cond} ORDER BY created_at DESC, id DESC LIMIT {PAGE}"
    if offset:
        q += f" OFFSET {offset}"
    if srv.backend == "sqlite":
        db = sqlite3.connect(srv.db_url.removeprefix("sqlite://"))
        times = []
        for _ in range(REPS):
            t0 = time.perf_counter()
            db.execute(q).fetchall()
            times.append(time.perf_counter() - t0)
        db.close()
        return statistics.median(times) * 1000
    times = []
    for _ in range(REPS):
        out = subprocess.run(
            ["psql", "-w", "-X", "-At", srv.db_url, "-c", f"EXPLAIN (ANALYZE, FORMAT JSON) {q}"],
            check=True, capture_output=True, text=True,
        ).stdout
        import json
        times.append(json.loads(out)[0]["Execution Time"])
    return statistics.median(times)


def run(backend: str) -> None:
    srv = Server(backend)
    srv.start(create_other_key=False)
    try:
        r = srv.request("POST", "/v1/task", json={"task": "bench task", "max_steps": 2})
        template = r.json()["r"]["id"]
        deadline = time.monotonic() + 60
        while srv.request("GET", f"/v1/task/{template}").status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.2)
        t0 = time.perf_counter()
        fill(srv, template)
        print(f"[{backend}] inserted {N} tasks in {time.perf_counter() - t0:.1f} s")
        s = requests.Session()
        r = s.post(srv.base + "/dashboard/login", data={"key": srv.key}, headers={"Origin": srv.base}, allow_redirects=False)
        assert r.status_code == 303, r.text
        url = srv.base + "/dashboard/api/tasks"
        first, _ = timed(s, url, {"l": PAGE})
        # The cursor of the page that starts at row N - 100 (what walking "Older" reaches).
        deep_row = f"tsk_b{N - 100:07d}"
        rows = {}
        rows["first page"] = first
        deep, b = timed(s, url, {"l": PAGE, "after": f"{b_created(s, srv, deep_row)}:{deep_row}"})
        assert len(b["items"]) == PAGE, len(b["items"])
        rows[f"page at row {N - 100:,} (keyset)"] = deep
        rows["status=failed (1 in 100), first page"] = timed(s, url, {"l": PAGE, "status": "failed"})[0]
        rows["search, common word, first page"] = timed(s, url, {"l": PAGE, "q": "bench"})[0]
        needle, b = timed(s, url, {"l": PAGE, "q": "needle"})
        assert len(b["items"]) == 1, b
        rows["search, one match among 100k (full scan)"] = needle
        print(f"[{backend}] median of {REPS}, ratio to the first page ({first * 1000:.1f} ms):")
        for k, v in rows.items():
            print(f"  {k:45s} {v / first:6.2f}x")
        owner = subprocess_owner(srv, template)
        created = b_created(s, srv, deep_row)
        k = sql_ms(srv, owner, None, (created, deep_row))
        o = sql_ms(srv, owner, N - 100, None)
        print(f"[{backend}] SQL only, page at row {N - 100:,}: OFFSET / keyset = {o / k:.1f}x")
    finally:
        srv.stop()
        srv.cleanup()


def b_created(s: requests.Session, srv: Server, tid: str) -> int:
    return s.get(srv.base + f"/dashboard/api/task/{tid}", timeout=30).json()["summary"]["created_at"]


def subprocess_owner(srv: Server, tid: str) -> str:
    if srv.backend == "sqlite":
        db = sqlite3.connect(srv.db_url.removeprefix("sqlite://"))
        (owner,) = db.execute("SELECT owner FROM tasks WHERE id = ?", (tid,)).fetchone()
        db.close()
        return owner
    return subprocess.run(
        ["psql", "-w", "-X", "-At", srv.db_url, "-c", f"SELECT owner FROM tasks WHERE id = '{tid}'"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


if __name__ == "__main__":
    for b in sys.argv[1:] or ["sqlite", "postgres"]:
        run(b)
