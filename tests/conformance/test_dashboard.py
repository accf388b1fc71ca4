"""The dashboard (/dashboard) in real headless Chromium, driven by Playwright, against a running
smoothd with the scripted model: sign in, a task appearing and going running -> done without a
reload, its step timeline and the recording's step markers, the interactive takeover of a live
session, cancel, file upload and delete, another key's tasks staying invisible, `<script>` in a
task's text and output staying inert, and CSRF. One smoothd per backend for the module.

Set SMOOTHD_DASHBOARD_SHOTS=<dir> to keep a desktop (1280x800) and a mobile (390x844)
screenshot of each page there (docs/dashboard/ holds the committed ones).
"""

import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from smoothd_support import (
    LLM_PRICE_IN,
    LLM_PRICE_OUT,
    close_client,
    llm_env,
    make_client,
    playwright_chromium,
    scripted_model,
    serve,
    Server,
    wait_final,
    wait_status,
)

pytest.importorskip("playwright.sync_api")

DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 390, "height": 844}
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def llm():
    yield from scripted_model()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, llm):
    yield from serve(request.param, llm_env(llm.base_url))


@pytest.fixture(scope="module")
def chromium():
    yield from playwright_chromium()


def sign_in(chromium, server, key=None, viewport=DESKTOP):
    # The pages' CSP (checked in the sign-in test) would also block an injected inline script;
    # it is bypassed here so the XSS test proves the escaping itself, and so Playwright may
    # evaluate its wait predicates.
    ctx = chromium.new_context(viewport=viewport, bypass_csp=True)
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(server.base + "/dashboard/login")
    page.fill("#key", key or server.key)
    page.click("button[type=submit]")
    page.wait_for_url(server.base + "/dashboard")
    return ctx, page


@pytest.fixture
def dash(chromium, server):
    ctx, page = sign_in(chromium, server)
    page.on("dialog", lambda d: d.accept())
    yield page
    ctx.close()


@pytest.fixture
def client(server):
    c = make_client(server.base + "/", server.key)
    yield c
    close_client(c)


def shot(page, name):
    """Keeps a screenshot when SMOOTHD_DASHBOARD_SHOTS names a folder."""
    d = os.environ.get("SMOOTHD_DASHBOARD_SHOTS")
    if not d:
        return
    Path(d).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(Path(d) / f"{name}.png"), full_page=False)


def submit(server, body, key="default"):
    r = server.request("POST", "/v1/task", key=key, json=body)
    assert r.status_code == 200, r.text
    return r.json()["r"]["id"]


def row(page, tid):
    return page.locator(f'tr[data-id="{tid}"]')


# --- sign-in ---


def test_sign_in_refuses_a_wrong_key_and_sets_a_strict_httponly_cookie(chromium, server):
    ctx = chromium.new_context(viewport=DESKTOP)
    try:
        page = ctx.new_page()
        page.set_default_timeout(WAIT_MS)
        # A browser asking for / lands on the sign-in page; an API client gets JSON.
        page.goto(server.base + "/")
        assert page.url == server.base + "/dashboard/login", page.url
        api = requests.get(server.base + "/", timeout=10)
        assert api.status_code == 404 and "detail" in api.json(), api.text
        csp = requests.get(server.base + "/dashboard/login", timeout=10).headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp, csp
        paths = requests.get(server.base + "/openapi.json", timeout=10).json()["paths"]
        assert paths and not [p for p in paths if "dashboard" in p], "the dashboard is not API"
        page.fill("#key", "smd_wrong_" + "0" * 20)
        page.click("button[type=submit]")
        assert "not valid" in page.locator("p.error").inner_text()
        assert page.url.endswith("/dashboard/login"), page.url
        assert ctx.cookies() == [], ctx.cookies()

        page.fill("#key", server.key)
        page.click("button[type=submit]")
        page.wait_for_url(server.base + "/dashboard")
        (cookie,) = ctx.cookies()
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict", cookie
        assert server.key not in cookie["value"], "the cookie must not hold the key in clear text"
        # Scripts on the page cannot read it.
        assert page.evaluate("document.cookie") == ""
        page.locator("header form.who button").click()
        page.wait_for_url("**/dashboard/login?m=out")
        page.goto(server.base + "/dashboard")
        assert page.url.endswith("/dashboard/login"), page.url
    finally:
        ctx.close()


def test_a_revoked_key_ends_the_session(chromium, server):
    name = "revoked-" + str(time.monotonic_ns())
    key = server.create_key(name)
    ctx, page = sign_in(chromium, server, key=key)
    try:
        page.wait_for_selector("text=No tasks yet.")
        r = subprocess.run([server.bin, "keys", "revoke", name], cwd=server.tmp, env=server.env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        page.reload()
        page.wait_for_url("**/dashboard/login?m=revoked")
        assert "no longer valid" in page.locator("p.error").inner_text()
        status = page.evaluate("fetch('/dashboard/api/tasks').then(r => r.status)")
        assert status == 401, status
    finally:
        ctx.close()


def test_an_empty_key_explains_itself(chromium, server):
    key = server.create_key("empty-" + str(time.monotonic_ns()))
    for name, viewport in (("desktop", DESKTOP), ("mobile", MOBILE)):
        ctx, page = sign_in(chromium, server, key=key, viewport=viewport)
        try:
            page.wait_for_selector("text=No tasks yet.")
            assert page.locator("pre.code").inner_text().startswith("from smooth import SmoothClient")
            shot(page, f"tasks-empty-{name}")
        finally:
            ctx.close()


# --- the list, live ---


def test_a_task_appears_and_goes_running_to_done_without_reload(dash, server, llm, client):
    marker = llm.script("live", [[{"op": "wait", "seconds": 2}], [{"op": "wait", "seconds": 1}], [{"op": "done", "output": {"price": 42}}]])
    page = dash
    page.wait_for_selector("main#app .bar h1")
    page.evaluate("window.__sameDocument = 1")
    handle = client.run(f"Watch me live {marker}", max_steps=6)
    tid = handle.id()
    r = row(page, tid)
    r.wait_for()
    page.wait_for_selector(f'tr[data-id="{tid}"][data-status="running"]')
    page.wait_for_selector(f'tr[data-id="{tid}"][data-status="done"]')
    assert page.evaluate("window.__sameDocument") == 1, "the page reloaded"
    assert "Watch me live" in r.locator(".task-text").inner_text()
    cells = r.locator("td.n").all_inner_texts()
    assert cells[0] == "3", cells  # steps
    assert int(cells[1].replace(",", "").replace("\u202f", "")) > 0, cells  # tokens
    assert handle.result().output == {"price": 42}


def test_filters_search_and_paging(dash, server, llm):
    tag = "pagingtag" + str(time.monotonic_ns())
    ids = [submit(server, {"task": f"{tag} number {i}", "max_steps": 2}) for i in range(3)]
    for tid in ids:
        wait_final(server, tid, timeout=60)
    page = dash
    page.goto(server.base + f"/dashboard?q={tag}")
    page.wait_for_selector(f'tr[data-id="{ids[0]}"]')
    assert page.locator("tbody tr").count() == 3
    # Keyset paging through the JSON the list uses: 2 then 1, no overlap, newest first.
    first = page.evaluate(f"fetch('/dashboard/api/tasks?l=2&q={tag}').then(r => r.json())")
    second = page.evaluate(f"fetch('/dashboard/api/tasks?l=2&q={tag}&after=' + encodeURIComponent('{first['next']}')).then(r => r.json())")
    got = [t["id"] for t in first["items"] + second["items"]]
    assert got == list(reversed(ids)), got
    assert second["next"] is None
    bad = page.evaluate("fetch('/dashboard/api/tasks?status=bogus').then(async r => [r.status, await r.json()])")
    assert bad[0] == 422 and bad[1]["detail"].startswith("status:"), bad
    page.goto(server.base + f"/dashboard?q={tag}&status=running")
    page.wait_for_selector("text=No tasks match these filters.")


# --- one task ---


def test_timeline_and_recording_markers_seek_the_video(dash, server, llm, client, site):
    marker = llm.script("timeline", [
        [{"op": "wait", "seconds": 1}],
        [{"op": "scroll", "direction": "down"}],
        [{"op": "wait", "seconds": 1}],
        [{"op": "done", "output": {"ok": True}}],
    ])
    handle = client.run(f"Walk the timeline {marker}", url=site.url("/agent/slow.html"), max_steps=8, enable_recording=True)
    tid = handle.id()
    assert handle.result().output == {"ok": True}
    page = dash
    page.goto(server.base + f"/dashboard/task/{tid}")
    page.wait_for_selector("#steps > li >> nth=3")
    assert page.locator("#steps > li").count() == 4
    first = page.locator("#steps > li").first
    assert "wait" in first.locator("ul.acts").inner_text()
    # The page view is collapsed until asked for.
    view = first.locator("details.view")
    assert view.get_attribute("open") is None
    view.locator("summary").click()
    assert view.get_attribute("open") is not None
    # What the model saw is the page view itself: the page's heading and its button are in it.
    seen = view.locator("pre").inner_text()
    assert "Waiting room" in seen and "Noop" in seen, seen
    # Each step shows what the model's answer cost at the price table (SMOOTHD_LLM_PRICES).
    s1 = server.request("GET", f"/v1/task/{tid}/steps").json()["r"][0]
    want = s1["prompt_tokens"] * LLM_PRICE_IN / 1e6 + s1["completion_tokens"] * LLM_PRICE_OUT / 1e6
    assert abs(s1["cost_usd"] - want) < 1e-9, (s1, want)
    assert "$" in first.locator(".step-head").inner_text()
    page.wait_for_function("document.querySelector('#recording') && document.querySelector('#recording').readyState >= 1", timeout=WAIT_MS)
    page.wait_for_selector("#markers .marker >> nth=3")
    before = page.evaluate("document.querySelector('#recording').currentTime")
    assert before == 0, before
    page.locator("#steps > li >> nth=2").locator("button.step-no").click()
    page.wait_for_function("document.querySelector('#recording').currentTime > 0")
    moved = page.evaluate("document.querySelector('#recording').currentTime")
    assert moved > before, moved
    # The current step is highlighted, in the list and on the markers.
    page.wait_for_selector("#steps > li.current")
    assert page.locator("#steps > li.current").get_attribute("data-step") == "3"
    page.wait_for_function("(() => { const v = document.querySelector('#recording'); return !v.seeking && v.readyState >= 2; })()")
    shot(page, "task-desktop")
    # Playing moves the highlight (the video's own clock, muted, from the start).
    page.evaluate("(() => { const v = document.querySelector('#recording'); v.muted = true; v.currentTime = 0; })()")
    page.wait_for_function("document.querySelector('#steps > li.current') === null || document.querySelector('#steps > li.current').dataset.step !== '3'")
    # The trace export is a JSON download of everything shown.
    trace = page.evaluate(f"fetch('/dashboard/api/task/{tid}/trace').then(r => r.json())")
    assert len(trace["steps"]) == 4 and trace["summary"]["id"] == tid, trace.keys()


def test_take_over_a_live_session_and_click_in_it(dash, server, client, site):
    s = client.session()
    try:
        wait_status(server, s.id(), "running", timeout=60)
        s.goto(site.url("/index.html"))
        s.evaluate_js("window.__downs = 0; document.addEventListener('mousedown', () => window.__downs++); 1")
        page = dash
        page.goto(server.base + f"/dashboard/task/{s.id()}")
        page.wait_for_selector("#live-frame")
        assert "interactive=true" not in page.locator("#live-frame").get_attribute("src")
        page.check("#takeover")
        page.wait_for_selector('#live-frame[src*="interactive=true"]')
        frame = page.frame_locator("#live-frame")
        live = page.frame(url=lambda u: "/live/" in u and "interactive=true" in u)
        deadline = time.monotonic() + 45
        while (live is None or not live.evaluate("window.live && window.live.frames > 0")) and time.monotonic() < deadline:
            time.sleep(0.2)
            live = page.frame(url=lambda u: "/live/" in u and "interactive=true" in u)
        assert live is not None and live.evaluate("window.live.frames > 0"), (
            "no live frame arrived",
            [f.url for f in page.frames],
            page.locator("#live-frame").get_attribute("src"),
        )
        shot(page, "live-desktop")
        frame.locator("#screen").click(position={"x": 200, "y": 150})
        deadline = time.monotonic() + 20
        downs = 0
        while time.monotonic() < deadline:
            downs = s.evaluate_js("window.__downs").output
            if downs:
                break
            time.sleep(0.3)
        assert downs >= 1, "the click in the dashboard did not reach the session's browser"
    finally:
        s.close()
        wait_final(server, s.id(), timeout=30, check=False)


def test_cancel_a_running_task_from_the_list(dash, server, llm, client):
    marker = llm.script("cancel", [[{"op": "wait", "seconds": 2}]] * 30)
    handle = client.run(f"Run until cancelled {marker}", max_steps=30)
    tid = handle.id()
    wait_status(server, tid, "running", timeout=60)
    page = dash
    page.goto(server.base + "/dashboard")
    page.wait_for_selector(f'tr[data-id="{tid}"][data-status="running"]')
    shot(page, "tasks-desktop")
    row(page, tid).locator('button[data-action="cancel"]').click()
    page.wait_for_selector(f'tr[data-id="{tid}"][data-status="cancelled"]', timeout=WAIT_MS)
    assert wait_final(server, tid)["status"] == "cancelled"


def test_upload_and_delete_a_file(dash, server, tmp_path):
    name = "notes <img src=x onerror=window.__xss=9>.txt"
    p = tmp_path / name
    p.write_text("hello dashboard")
    page = dash
    page.goto(server.base + "/dashboard/resources")
    section = page.locator("#files")
    section.locator("input[type=file]").set_input_files(str(p))
    section.locator("button[type=submit]").click()
    page.wait_for_selector("#files tr")
    assert section.locator("tr").count() == 1
    assert name in section.locator("tr").inner_text()
    assert page.evaluate("window.__xss === undefined")
    fid = section.locator("tr").get_attribute("data-id")
    files = requests.get(server.base + "/dashboard/api/files", cookies=cookie_jar(page), timeout=10).json()["items"]
    assert [f["id"] for f in files] == [fid]
    shot(page, "resources-desktop")
    section.locator("tr button.danger").click()
    page.wait_for_selector("#files >> text=No files uploaded.")
    files = requests.get(server.base + "/dashboard/api/files", cookies=cookie_jar(page), timeout=10).json()["items"]
    assert files == []


def cookie_jar(page):
    return {c["name"]: c["value"] for c in page.context.cookies()}


def test_other_keys_tasks_are_invisible(dash, server):
    theirs = submit(server, {"task": "the other key's secret errand", "max_steps": 2}, key=server.other_key)
    mine = submit(server, {"task": "my own errand", "max_steps": 2})
    page = dash
    page.goto(server.base + "/dashboard")
    page.wait_for_selector(f'tr[data-id="{mine}"]')
    assert row(page, theirs).count() == 0
    assert "secret errand" not in page.content()
    listed = page.evaluate("fetch('/dashboard/api/tasks?l=200').then(r => r.json())")
    assert theirs not in [t["id"] for t in listed["items"]]
    page.goto(server.base + f"/dashboard/task/{theirs}")
    page.wait_for_selector("text=Cannot show this task.")
    assert "secret errand" not in page.content()
    # The cookie decides: an apikey header of another key is ignored on the dashboard's mount.
    r = page.evaluate(
        f"fetch('/dashboard/api/v1/task/{theirs}', {{headers: {{apikey: '{server.other_key}'}}}}).then(r => r.status)"
    )
    assert r == 404, r
    for tid in (theirs, mine):
        wait_final(server, tid, timeout=60, key=server.other_key if tid == theirs else "default")


def test_script_in_task_text_and_output_stays_inert(dash, server, llm, client):
    evil = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
    marker = llm.script("xss", [[{"op": "done", "output": {"note": evil, "html": "<svg onload=window.__xss=3>"}}]])
    handle = client.run(f"{evil} {marker}", max_steps=3)
    tid = handle.id()
    handle.result()
    page = dash
    page.goto(server.base + "/dashboard")
    page.wait_for_selector(f'tr[data-id="{tid}"]')
    assert evil in row(page, tid).locator(".task-text").inner_text()
    page.goto(server.base + f"/dashboard/task/{tid}")
    page.wait_for_selector("#output")
    assert evil in page.locator("h1.task-title").inner_text()
    out = page.locator("#output").inner_text()
    assert "<script>window.__xss = 1</script>" in out and "<svg onload=window.__xss=3>" in out, out
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss === undefined"), "markup from a task ran in the dashboard"
    assert page.locator("main script, main img[src='x'], main svg").count() == 0


def test_state_changes_need_the_csrf_token(dash, server):
    tid = submit(server, {"task": "csrf target", "max_steps": 2})
    page = dash
    page.goto(server.base + "/dashboard")
    status = page.evaluate(f"fetch('/dashboard/api/v1/task/{tid}', {{method: 'DELETE'}}).then(r => r.status)")
    assert status == 403, status
    token = page.evaluate("document.querySelector('meta[name=csrf-token]').content")
    status = page.evaluate(
        f"fetch('/dashboard/api/v1/task/{tid}', {{method: 'DELETE', headers: {{'x-csrf-token': '{token}'}}}}).then(r => r.status)"
    )
    assert status == 200, status
    wait_final(server, tid, timeout=60)


def test_health_and_screenshots_of_every_page(chromium, server):
    for name, viewport in (("desktop", DESKTOP), ("mobile", MOBILE)):
        ctx = chromium.new_context(viewport=viewport)
        try:
            page = ctx.new_page()
            page.goto(server.base + "/dashboard/login")
            page.fill("#key", "not-a-key")
            page.click("button[type=submit]")
            page.wait_for_selector("p.error")
            shot(page, f"signin-{name}")
        finally:
            ctx.close()
        ctx, page = sign_in(chromium, server, viewport=viewport)
        try:
            page.goto(server.base + "/dashboard/health")
            page.wait_for_selector(".stats .stat")
            text = page.locator(".stats").inner_text()
            assert "Queue depth" in text and "Browser crashes" in text, text
            # The same numbers as /metrics (final states only: they cannot move in between).
            health = page.evaluate("fetch('/dashboard/api/health').then(r => r.json())")
            metrics = server.request("GET", "/metrics").text
            for status in ("done", "failed", "cancelled"):
                line = f'smoothd_tasks{{status="{status}"}} '
                (value,) = [ln[len(line):] for ln in metrics.splitlines() if ln.startswith(line)]
                assert int(float(value)) == health["tasks_by_status"].get(status, 0), (status, value, health)
            assert int(float([ln for ln in metrics.splitlines() if ln.startswith("smoothd_queue_depth ")][0].split()[1])) == health["queue_depth"]
            assert health["browser_crashes"] == 0, health
            shot(page, f"health-{name}")
            if name == "mobile":
                page.goto(server.base + "/dashboard")
                page.wait_for_selector("tbody tr, .empty:not([hidden])")
                shot(page, "tasks-mobile")
                walked = page.locator('tbody tr:has-text("Walk the timeline")')
                if walked.count():  # the timeline test ran before: show its task
                    page.goto(server.base + f"/dashboard/task/{walked.first.get_attribute('data-id')}")
                    page.wait_for_selector("#steps > li")
                    page.wait_for_function("!document.querySelector('#recording') || document.querySelector('#recording').readyState >= 2")
                    shot(page, "task-mobile")
                page.goto(server.base + "/dashboard/resources")
                page.wait_for_selector("#files h2")
                shot(page, "resources-mobile")
                # No sideways scrolling on a phone.
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        finally:
            ctx.close()


def test_an_unreachable_server_is_explained(chromium):
    srv = Server("sqlite")
    try:
        srv.start(create_other_key=False)
        ctx, page = sign_in(chromium, srv)
        try:
            page.wait_for_selector("text=No tasks yet.")
            assert page.locator("#banner").is_hidden()
            srv.kill()
            page.wait_for_selector("#banner.error", timeout=WAIT_MS)
            assert "cannot reach smoothd" in page.locator("#banner").inner_text().lower()
        finally:
            ctx.close()
    finally:
        srv.kill()
        srv.cleanup()
