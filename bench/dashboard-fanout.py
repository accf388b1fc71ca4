#!/usr/bin/env python3
"""What open dashboards cost the database: a real `smoothd serve` on PostgreSQL, K open
dashboard streams (GET /dashboard/api/stream, signed in), M tasks submitted and run to their
end; the database's committed transactions and rows read (pg_stat_database) are compared
between K = 1 and K = 100, and with no dashboard open. Reported as ratios, measured in the same
run. Each stream must have received every task's final status.

    cargo build -p smoothd && .venv-test/bin/python bench/dashboard-fanout.py
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "conformance"))
os.environ.setdefault("SMOOTH_TELEMETRY", "off")

import requests  # noqa: E402

from smoothd_support import Server  # noqa: E402

M = 20


def stats(srv: Server) -> tuple[int, int]:
    out = subprocess.run(
        ["psql", "-w", "-X", "-At", srv.db_url, "-c",
         "SELECT xact_commit, tup_returned + tup_fetched FROM pg_stat_database WHERE datname = current_database()"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    a, b = out.split("|")
    return int(a), int(b)


class Stream(threading.Thread):
    def __init__(self, srv: Server, cookies) -> None:
        super().__init__(daemon=True)
        self.srv, self.cookies = srv, cookies
        self.finals: set[str] = set()
        self.ready = threading.Event()
        self.stop = False

    def run(self) -> None:
        with requests.get(self.srv.base + "/dashboard/api/stream", cookies=self.cookies, stream=True, timeout=120) as r:
            event = None
            for line in r.iter_lines(decode_unicode=True):
                if self.stop:
                    return
                if line.startswith("event: "):
                    event = line[7:]
                    if event == "hello":
                        self.ready.set()
                elif line.startswith("data: ") and event == "task":
                    import json
                    t = json.loads(line[6:])
                    if t["status"] in ("done", "failed", "cancelled"):
                        self.finals.add(t["id"])


def round_(srv: Server, cookies, k: int) -> tuple[int, int]:
    streams = [Stream(srv, cookies) for _ in range(k)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.ready.wait(30), "a stream did not open"
    time.sleep(1.5)
    before = stats(srv)
    ids = []
    for i in range(M):
        r = srv.request("POST", "/v1/task", json={"task": f"fanout {k} {i}", "max_steps": 2})
        ids.append(r.json()["r"]["id"])
    deadline = time.monotonic() + 120
    for tid in ids:
        while srv.request("GET", f"/v1/task/{tid}").status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.2)
    if k:
        while time.monotonic() < deadline and any(not set(ids) <= s.finals for s in streams):
            time.sleep(0.2)
        missing = sum(1 for s in streams if not set(ids) <= s.finals)
        assert missing == 0, f"{missing} of {k} streams missed a final status"
    time.sleep(1.5)  # pg_stat_database is flushed about once a second
    after = stats(srv)
    for s in streams:
        s.stop = True
    return after[0] - before[0], after[1] - before[1]


def main() -> None:
    srv = Server("postgres")
    srv.start(create_other_key=False)
    try:
        s = requests.Session()
        r = s.post(srv.base + "/dashboard/login", data={"key": srv.key}, headers={"Origin": srv.base}, allow_redirects=False)
        assert r.status_code == 303, r.text
        cookies = s.cookies.get_dict()
        res = {k: round_(srv, cookies, k) for k in (0, 1, 100)}
        base_x, base_r = res[1]
        print(f"PostgreSQL, {M} tasks each, ratio to 1 open dashboard:")
        for k, (x, rows) in res.items():
            print(f"  {k:3d} dashboards: transactions {x / base_x:5.2f}x   rows read {rows / base_r:5.2f}x")
    finally:
        srv.stop()
        srv.cleanup()


if __name__ == "__main__":
    main()
