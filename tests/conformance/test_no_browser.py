"""A server that finds no Chromium keeps sessions usable: browser actions answer 500 with the
reason (the SDK raises RuntimeError), and close/cancel behave as usual."""

import pytest

from smooth import ToolCallError
from smooth.models import TaskEvent
from smoothd_support import Server, close_client, make_client, wait_final, wait_status


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def bare_server(request):
    srv = Server(request.param, extra_env={"SMOOTHD_CHROMIUM": "/nonexistent/chromium"})
    try:
        srv.start()
        yield srv
        assert srv.stop() == 0, srv.stderr_tail()
    finally:
        srv.cleanup()


@pytest.fixture
def bare_client(bare_server):
    c = make_client(bare_server.base + "/", bare_server.key)
    yield c
    close_client(c)


def test_browser_actions_answer_500_with_the_reason(bare_server, bare_client):
    # As a context manager, so the handle keeps polling: exec_js (deprecated) relies on it.
    with bare_client.session() as s:
        wait_status(bare_server, s.id(), "running")
        for call in (
            lambda: s.goto("http://127.0.0.1:1/"),
            lambda: s.evaluate_js("document.title"),
            lambda: s.exec_js("1 + 1"),
        ):
            with pytest.raises(RuntimeError, match="(?i)browser|chromium"):
                call()
        with pytest.raises(RuntimeError):
            s.extract({"type": "object"}, "x")
        with pytest.raises(ToolCallError):
            s._run_async(
                s._async_handle._send_event(
                    TaskEvent(name="browser_action", payload={"name": "teleport"}), has_result=True
                )
            )
        assert s.close(force=False) is True
        assert s.result(timeout=30).status == "done"


def test_cancel_still_works(bare_server, bare_client):
    s = bare_client.session()
    wait_status(bare_server, s.id(), "running")
    assert s.close(force=True) is True
    assert wait_final(bare_server, s.id(), timeout=10)["status"] == "cancelled"
