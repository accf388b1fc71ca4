"""The first start without a key: `smoothd serve` with no SMOOTHD_API_KEY (set empty, as compose
passes it) and an empty key table creates a key named `bootstrap`, stores only its hash, prints it
once with the SMOOTH_BASE_URL to use, and the real SDK works with it. A second start prints none.
"""

import os
import re
import sqlite3
import subprocess
import time

import requests

from smoothd_support import _free_port, _smoothd_bin, close_client, make_client

KEY_RE = re.compile(r"export CIRCLEMIND_API_KEY=(smd_[A-Za-z0-9]+)")


def start(tmp_path, *args: str) -> tuple[subprocess.Popen, str, int]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMOOTHD_")}
    env.update(
        SMOOTHD_DATA_DIR=str(tmp_path / "data"),
        SMOOTHD_LISTEN=f"127.0.0.1:{port}",
        SMOOTHD_API_KEY="",
        SMOOTHD_LLM_BASE_URL="",
        SMOOTHD_LLM_MODEL="",
    )
    err = open(tmp_path / f"stderr-{port}", "wb")
    p = subprocess.Popen([_smoothd_bin(), *args], env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
    return p, str(tmp_path / f"stderr-{port}"), port


def wait_ready(p: subprocess.Popen, port: int, log: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert p.poll() is None, open(log, errors="replace").read()
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return open(log, errors="replace").read()
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready:\n{open(log, errors='replace').read()}")


def stop(p: subprocess.Popen) -> None:
    p.terminate()
    p.wait(30)


def test_first_start_creates_prints_and_stores_only_the_hash(tmp_path):
    p, log, port = start(tmp_path, "serve", "--no-workers")
    try:
        out = wait_ready(p, port, log)
        keys = KEY_RE.findall(out)
        assert len(keys) == 1, out
        key = keys[0]
        assert f"export SMOOTH_BASE_URL=http://127.0.0.1:{port}/" in out, out
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/v1/task", headers={"apikey": key}, timeout=10).status_code == 200
        assert requests.get(base + "/v1/task", headers={"apikey": key[:-1] + "x"}, timeout=10).status_code == 401
        c = make_client(base + "/", key)
        try:
            assert c.create_profile("first").id == "first"
        finally:
            close_client(c)
    finally:
        stop(p)
    db = sqlite3.connect(tmp_path / "data" / "smoothd.db")
    rows = db.execute("SELECT name, key_hash FROM api_keys").fetchall()
    db.close()
    assert [r[0] for r in rows] == ["bootstrap"] and key not in rows[0][1], rows

    # The next start finds a key and prints none; the key still works.
    p, log, port = start(tmp_path, "serve", "--no-workers")
    try:
        out = wait_ready(p, port, log)
        assert not KEY_RE.findall(out), out
        r = requests.get(f"http://127.0.0.1:{port}/v1/profile", headers={"apikey": key}, timeout=10)
        assert r.status_code == 200 and [x["id"] for x in r.json()["r"]] == ["first"], r.text
    finally:
        stop(p)
