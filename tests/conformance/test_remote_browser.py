"""SMOOTHD_BROWSER_WS: workers use a Chromium someone else started (here, the test) instead of
launching one. Sessions run in it (its /json/list shows our page, and smoothd has no Chromium
child), tasks that need a Chromium of their own fail saying why, and when the remote browser
goes away and comes back at the same address the pool connects again.

A browser that freezes (SIGSTOP: the connection stays open, nothing answers) is found out by
the connection's probe.

On SQLite the endpoint is the browser's `ws://.../devtools/browser/<id>`; on PostgreSQL it is
`http://127.0.0.1:PORT`, resolved through /json/version."""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from smooth import ApiError
from smoothd_support import (
    CHROMIUM_FLAGS,
    Server,
    _free_port,
    chromium_browser_pids,
    chromium_path,
    close_client,
    make_client,
    wait_final,
    wait_status,
)

pytestmark = pytest.mark.usefixtures("browser")


class RemoteChromium:
    """A headless Chromium of the test's own with a DevTools port: the "fleet"."""

    def __init__(self, port: int = 0) -> None:
        self.tmp = tempfile.mkdtemp(prefix="smoothd-remote-")
        self.proc = subprocess.Popen(
            [
                chromium_path(),
                *CHROMIUM_FLAGS,
                f"--remote-debugging-port={port}",
                f"--user-data-dir={self.tmp}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.ws_url = None
        deadline = time.monotonic() + 30
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            if "DevTools listening on " in line:
                self.ws_url = line.split("DevTools listening on ", 1)[1].strip()
                break
        assert self.ws_url, "the remote Chromium did not start"
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.port = int(self.ws_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        self.http_url = f"http://127.0.0.1:{self.port}"

    def pages(self) -> list[dict]:
        r = requests.get(f"{self.http_url}/json/list", timeout=10)
        r.raise_for_status()
        return [t for t in r.json() if t.get("type") == "page"]

    def page_urls(self) -> list[str]:
        return [t["url"] for t in self.pages()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            # Its own process group: renderers and helpers go with it.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_until(what, predicate, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def remote(request):
    """(server, remote Chromium): a smoothd whose workers use the remote browser."""
    chromium = RemoteChromium()
    endpoint = chromium.ws_url if request.param == "sqlite" else chromium.http_url
    srv = Server(request.param, extra_env={"SMOOTHD_BROWSER_WS": endpoint})
    try:
        srv.start(create_other_key=False)
        yield srv, chromium
        assert srv.stop() == 0, srv.stderr_tail()
    finally:
        srv.cleanup()
        chromium.close()


def test_sessions_run_in_the_remote_browser(remote, site):
    server, chromium = remote
    page = site.url("/index.html") + "?remote=1"
    client = make_client(server.base + "/", server.key)
    try:
        with client.session() as s:
            wait_status(server, s.id(), "running", timeout=30)
            s.goto(page)
            assert s.evaluate_js("document.title").output == "Conformance home"
            assert s.evaluate_js("(args) => args.a * args.b", {"a": 6, "b": 7}).output == 42
            # The page is open in the remote browser, and smoothd started no Chromium.
            assert page in chromium.page_urls(), chromium.pages()
            assert chromium_browser_pids(server.proc.pid) == []
        wait_final(server, s.id(), timeout=30)
        # The session's context is gone from the remote browser with the session.
        wait_until("the session's page closed", lambda: page not in chromium.page_urls())
    finally:
        close_client(client)


def test_profiles_need_a_local_chromium(remote):
    server, _ = remote
    client = make_client(server.base + "/", server.key)
    try:
        client.create_profile("remote-profile")
        s = client.session(profile_id="remote-profile")
        final = wait_final(server, s.id(), timeout=30)
        assert final["status"] == "failed", final
        assert "profile_id needs a Chromium of its own" in final["error"], final
        assert "browser_ws" in final["error"], final
        with pytest.raises(ApiError):
            s.goto("http://127.0.0.1:1/")
    finally:
        close_client(client)


def test_the_pool_reconnects_after_the_remote_browser_comes_back(site):
    port = _free_port()
    chromium = RemoteChromium(port)
    srv = Server("sqlite", extra_env={"SMOOTHD_BROWSER_WS": chromium.http_url})
    client = None
    try:
        srv.start(create_other_key=False)
        client = make_client(srv.base + "/", srv.key)
        s = client.session()
        wait_status(srv, s.id(), "running", timeout=30)
        s.goto(site.url("/index.html"))
        # The browser goes away under the session: a crash to us. The session learns of it at
        # its next action, which answers 500 and ends it.
        chromium.kill()
        with pytest.raises(RuntimeError, match="(?i)crash|disconnect"):
            s.evaluate_js("document.title")
        final = wait_final(srv, s.id(), timeout=30)
        assert final["status"] == "failed", final
        assert "the browser crashed" in final["error"], final
        # While it is down, a session fails saying it cannot reach it.
        s = client.session()
        final = wait_final(srv, s.id(), timeout=60)
        assert final["status"] == "failed", final
        assert "cannot connect to the browser at http://127.0.0.1:" in final["error"], final
        # Back at the same address (a new browser id, found through /json/version).
        chromium.close()
        chromium = RemoteChromium(port)
        s = client.session()
        wait_status(srv, s.id(), "running", timeout=60)
        s.goto(site.url("/index.html"))
        assert s.evaluate_js("document.title").output == "Conformance home"
        assert site.url("/index.html") in chromium.page_urls()
        # A browser that stops answering without closing the connection (frozen, or a network
        # partition) is found out by the connection's probe: the next action fails as a crash.
        os.killpg(chromium.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="(?i)crash|disconnect|exited"):
            s.evaluate_js("document.title")
        assert time.monotonic() - started < 30
        final = wait_final(srv, s.id(), timeout=30)
        assert final["status"] == "failed" and "the browser crashed" in final["error"], final
        chromium.close()
        chromium = RemoteChromium(port)
        with client.session() as s:
            s.goto(site.url("/index.html"))
            assert s.evaluate_js("document.title").output == "Conformance home"
        wait_final(srv, s.id(), timeout=30)
        assert chromium_browser_pids(srv.proc.pid) == []
        assert srv.stop() == 0, srv.stderr_tail()
    finally:
        if client is not None:
            close_client(client)
        srv.cleanup()
        chromium.close()
