"""Fixtures of the conformance suite: a real `smoothd serve` process per database backend
(session-scoped, parametrized over sqlite and postgres so every test runs on both), and SDK
clients for the bootstrap key and for a second key. See smoothd_support.py for the environment.
"""

import os

# Must be set before `smooth` is imported: the SDK reads it at import time.
os.environ["SMOOTH_TELEMETRY"] = "off"

import pytest  # noqa: E402
import requests  # noqa: E402

from smoothd_support import Site, chromium_path, serve, close_client, make_client, wait_final  # noqa: E402


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request):
    yield from serve(request.param)


@pytest.fixture(scope="session")
def site():
    s = Site()
    yield s
    s.close()


@pytest.fixture(scope="session")
def has_browser() -> bool:
    """Whether smoothd finds a Chromium here. Without one, browser tests are skipped, except
    under CI (CI=true), where scripts/test installs Chromium and its absence is a failure."""
    return chromium_path() is not None


@pytest.fixture
def browser(has_browser):
    if not has_browser:
        if os.environ.get("CI"):
            pytest.fail("Chromium not found (CI=true): scripts/test should have installed it")
        pytest.skip("Chromium not installed (Debian: apt-get install chromium)")


@pytest.fixture
def client(server):
    c = make_client(server.base + "/", server.key)
    yield c
    close_client(c)


@pytest.fixture
def other_client(server):
    c = make_client(server.base + "/", server.other_key)
    yield c
    close_client(c)


@pytest.fixture
def cleanup_tasks(server):
    """Task ids appended here are cancelled after the test (sessions must not outlive it)."""
    ids: list[str] = []
    yield ids
    for tid in ids:
        try:
            server.request("DELETE", f"/v1/task/{tid}", timeout=10)
        except requests.RequestException:
            pass
    for tid in ids:
        wait_final(server, tid, timeout=15, check=False)




@pytest.fixture(autouse=True)
def _server_alive(request):
    """After each test: if a smoothd died under it, say so with its stderr."""
    yield
    srv = request.node.funcargs.get("server")
    if srv is not None and srv.proc is not None and srv.proc.poll() is not None:
        pytest.fail(f"smoothd ({srv.backend}) died with exit code {srv.proc.returncode}; stderr:\n{srv.stderr_tail()}")
