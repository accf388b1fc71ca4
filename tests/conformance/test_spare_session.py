"""The spare browser context (`spare_session`, on by default, as for this module's servers; off
in the last test): a context prepared ahead of the next task, handed to a task whose device, stealth and cursor match,
with that task's own `allowed_urls` and ad blocker applied when it is taken. Driven through the
real SDK's sessions, with `/metrics` telling which sessions got the spare.

Each test waits for the spare to be ready (`smoothd_browser_spare_ready 1`) before opening the
session that must take it.
"""

import time

import pytest

from smooth import ToolCallError
from smoothd_support import close_client, make_client, serve


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request):
    yield from serve(request.param)

ADBLOCK_FLAGS = "({ad: !!window.adLoaded, tracker: !!window.trackerLoaded, app: !!window.appLoaded})"


def metric(server, name: str) -> float:
    text = server.request("GET", "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def spare_taken(server) -> float:
    return metric(server, 'smoothd_browser_sessions_total{source="spare"}')


def wait_spare(server, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(server, "smoothd_browser_spare_ready") == 1:
            return
        time.sleep(0.1)
    pytest.fail("no spare browser context was prepared within 20 s")


def open_on_spare(server, client, cleanup_tasks, **options):
    """A session that took the spare (checked through the spare counter)."""
    wait_spare(server)
    before = spare_taken(server)
    s = client.session(**options)
    cleanup_tasks.append(s.id())
    s.evaluate_js("1")  # the session's browser is open once it answers
    assert spare_taken(server) == before + 1, "the session did not take the spare"
    return s


def test_a_spare_gets_the_tasks_allowed_urls_and_ad_blocker(server, client, cleanup_tasks, browser, site):
    port = site.base.rsplit(":", 1)[1]
    s = open_on_spare(server, client, cleanup_tasks, allowed_urls=[f"http://127.0.0.1:{port}/**"])
    s.goto(site.url("/adblock.html"))
    # use_adblock defaults to true: the spare, prepared with no blocker, blocks now.
    assert s.evaluate_js(ADBLOCK_FLAGS).output == {"ad": False, "tracker": False, "app": True}
    with pytest.raises(ToolCallError, match="not allowed"):
        s.goto(f"http://localhost:{port}/second.html")
    fetch = "(args) => fetch(args.url).then(r => r.ok ? 'loaded' : 'status ' + r.status, () => 'blocked')"
    assert s.evaluate_js(fetch, {"url": f"http://localhost:{port}/app.js"}).output == "blocked"
    assert s.evaluate_js(fetch, {"url": f"http://127.0.0.1:{port}/app.js"}).output == "loaded"
    s.close(force=True)

    # The next spare, for a task without the blocker and without allowed_urls.
    off = open_on_spare(server, client, cleanup_tasks, use_adblock=False)
    off.goto(site.url("/adblock.html"))
    assert off.evaluate_js(ADBLOCK_FLAGS).output == {"ad": True, "tracker": True, "app": True}
    off.goto(f"http://localhost:{port}/second.html")
    assert off.evaluate_js("location.host").output == f"localhost:{port}"
    off.close(force=True)


def test_a_spare_is_never_used_twice(server, client, cleanup_tasks, browser, site):
    first = open_on_spare(server, client, cleanup_tasks)
    first.goto(site.url("/index.html"))
    first.evaluate_js("localStorage.setItem('owner', 'first'); document.cookie = 'owner=first; max-age=3600'")
    assert first.evaluate_js("document.cookie").output == "owner=first"
    first.close(force=True)

    second = open_on_spare(server, client, cleanup_tasks)
    second.goto(site.url("/index.html"))
    assert second.evaluate_js("[localStorage.getItem('owner'), document.cookie]").output == [None, ""]
    second.close(force=True)


SIZE = "({w: innerWidth, h: innerHeight, sw: screen.width, sh: screen.height})"


def test_a_desktop_spare_serves_either_desktop_size(server, client, cleanup_tasks, browser, site):
    # The spare at hand was prepared for `desktop`: a `desktop-lg` task takes it, at its own size.
    lg = open_on_spare(server, client, cleanup_tasks, device="desktop-lg")
    lg.goto(site.url("/probe.html"))
    assert lg.evaluate_js(SIZE).output == {"w": 1920, "h": 1080, "sw": 2560, "sh": 1440}
    lg.close(force=True)
    # The next one is prepared for `desktop-lg`, and a `desktop` task takes it at 1280x800.
    desktop = open_on_spare(server, client, cleanup_tasks)
    desktop.goto(site.url("/probe.html"))
    assert desktop.evaluate_js(SIZE).output == {"w": 1280, "h": 800, "sw": 1920, "sh": 1080}
    desktop.close(force=True)


def test_a_task_with_other_options_opens_its_own_and_the_next_spare_follows_it(
    server, client, cleanup_tasks, browser, site
):
    wait_spare(server)
    spare, opened = spare_taken(server), metric(server, 'smoothd_browser_sessions_total{source="opened"}')
    # The spare is for desktop tasks: a phone task opens a context of its own...
    phone = client.session(device="mobile")
    cleanup_tasks.append(phone.id())
    phone.goto(site.url("/probe.html"))
    assert phone.evaluate_js("window.innerWidth").output < 500
    assert spare_taken(server) == spare
    assert metric(server, 'smoothd_browser_sessions_total{source="opened"}') == opened + 1
    phone.close(force=True)

    # ...and the next spare is prepared for phones, with the phone's emulation.
    again = open_on_spare(server, client, cleanup_tasks, device="mobile")
    again.goto(site.url("/probe.html"))
    m = again.evaluate_js("({w: window.innerWidth, dpr: devicePixelRatio, touch: 'ontouchstart' in window})").output
    assert m["w"] < 500 and m["dpr"] == 3 and m["touch"] is True, m
    again.close(force=True)

    # A desktop task after them opens its own again, with the desktop's viewport.
    wait_spare(server)
    desktop = client.session()
    cleanup_tasks.append(desktop.id())
    assert desktop.evaluate_js("window.innerWidth").output == 1280
    desktop.close(force=True)


def test_spare_session_false_keeps_no_spare(site):
    for srv in serve("sqlite", {"SMOOTHD_SPARE_SESSION": "false"}):
        client = make_client(srv.base + "/", srv.key)
        try:
            with client.session() as s:
                s.goto(site.url("/index.html"))
                assert s.evaluate_js("document.title").output == "Conformance home"
            # Well past the moment a spare would have been prepared (at start, and a second
            # after a session opened).
            time.sleep(2.5)
            assert metric(srv, "smoothd_browser_spare_ready") == 0
            assert spare_taken(srv) == 0
            assert metric(srv, 'smoothd_browser_sessions_total{source="opened"}') == 1
        finally:
            close_client(client)
