"""Process lifecycle: SIGTERM with work in flight, restart on the same database."""

import time

import pytest

from smoothd_support import STOP_TIMEOUT, Server, close_client, get_task, make_client, wait_final, wait_status


@pytest.fixture(params=["sqlite", "postgres"])
def own_server(request):
    srv = Server(request.param)
    try:
        srv.start()
        yield srv
        srv.stop()
    finally:
        srv.cleanup()


def test_sigterm_with_an_open_session_then_restart(own_server):
    srv = own_server
    r = srv.request("POST", "/v1/task", json={"task": None})
    assert r.status_code == 200, r.text
    sid = r.json()["r"]["id"]
    wait_status(srv, sid, "running")
    done = srv.request("POST", "/v1/task", json={"task": "x"}).json()["r"]["id"]
    wait_final(srv, done)
    profile = srv.request("POST", "/v1/profile", json={}).json()["r"]["id"]

    t0 = time.monotonic()
    srv.restart()  # asserts exit code 0
    assert time.monotonic() - t0 < STOP_TIMEOUT + 10

    # Nothing is left running; finished work and both keys survive.
    t = get_task(srv, sid).json()["r"]
    assert t["status"] in ("failed", "cancelled"), t
    assert t.get("error"), f"an interrupted session should say why: {t}"
    assert get_task(srv, done).json()["r"]["status"] == "failed"
    assert profile in [p["id"] for p in srv.request("GET", "/v1/profile").json()["r"]]
    r = srv.request("GET", "/v1/task", key=srv.other_key)
    assert r.status_code == 200, f"second key after restart: {r.status_code} {r.text}"

    # And it still works through the SDK.
    c = make_client(srv.base + "/", srv.key)
    try:
        assert c.run("after restart", max_steps=2).result(timeout=60).status == "failed"
    finally:
        close_client(c)
