"""The OpenAPI document is exact: schemathesis, run with every check against a real smoothd and
its own /openapi.json, finds no server error, no undocumented status or header, no response
that breaks its schema, no schema-valid request refused and no invalid one accepted.

Runs on SQLite only: what is checked is the HTTP surface the document describes, which the API
crate renders the same way on both backends (the store conformance and e2e suites cover the
databases). The server runs without workers, so sessions and tasks the fuzzer submits stay
waiting instead of starting Chromium, and with a one-second long-poll bound so polls with
`event_t` answer quickly.

Options (schemathesis.toml beside this file holds the per-operation settings):
  SMOOTHD_SCHEMATHESIS_EXAMPLES  most generated cases per operation and phase (default 30)
  SMOOTHD_SCHEMATHESIS_SEED      the generation seed (default fixed, so a run can be replayed)
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from smoothd_support import STOP_TIMEOUT, Server

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "schemathesis.toml"
EXAMPLES = os.environ.get("SMOOTHD_SCHEMATHESIS_EXAMPLES", "30")
SEED = os.environ.get("SMOOTHD_SCHEMATHESIS_SEED", "20261204")
RUN_TIMEOUT = 600


def _schemathesis() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.is_file():
        return str(exe)
    found = shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed (pip install -r tests/conformance/requirements.txt)")
    return found


@pytest.fixture(scope="module")
def fuzzed_server():
    srv = Server("sqlite", extra_env={"SMOOTHD_WORKERS": "0", "SMOOTHD_LONG_POLL_SECONDS": "1"})
    try:
        srv.start(create_other_key=False)
        yield srv
        rc = srv.stop()
        assert rc == 0, f"smoothd exited with {rc} (within {STOP_TIMEOUT}s?) after SIGTERM; stderr:\n{srv.stderr_tail()}"
    finally:
        srv.cleanup()


def test_schemathesis_finds_nothing(fuzzed_server, tmp_path):
    srv = fuzzed_server
    doc = requests.get(srv.url("/openapi.json"), timeout=10).json()
    operations = sum(
        1 for item in doc["paths"].values() for m in item if m in {"get", "put", "post", "delete", "patch"}
    )
    assert operations >= 25, sorted(doc["paths"])
    started = time.monotonic()
    cmd = [
        _schemathesis(),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        srv.url("/openapi.json"),
        "--header",
        f"apikey: {srv.key}",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--generation-database",
        "none",
        # One worker: hypothesis on Python 3.11 can fail parsing its own lambdas when
        # schemathesis generates in several threads at once (a CPython AST bug).
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path)
    elapsed = time.monotonic() - started
    out = r.stdout + r.stderr
    print(out[-3000:])
    print(f"schemathesis: {elapsed:.1f}s, exit {r.returncode}")
    tested = re.search(r"Tested:\s+(\d+)", out)
    assert tested, out[-3000:]
    assert int(tested.group(1)) == operations, f"schemathesis tested {tested.group(1)} of {operations} operations"
    assert r.returncode == 0, f"schemathesis found failures (seed {SEED}):\n{out[-12000:]}"
    assert re.search(r"\b\d+ failures?\b|\bErrors:", out) is None, out[-12000:]
