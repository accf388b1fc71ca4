"""Captchas: the human takeover, through the real SDK with the scripted model, on the fixture pages
under tests/fixtures/site/captcha. A page with a (stand-in) reCAPTCHA widget pauses the agent with
a `captcha` event; a person clicks the checkbox in the interactive live view (a real Chromium
driven by Playwright, mouse input on the live image) and the agent carries on with no model
request in between. No one answering fails the task with "captcha not solved"; cancel stops a
paused task; with `use_captcha_solver` off the model is told instead; a page that only talks
about captchas is not one.

The module runs its own smoothd per backend with a long captcha timeout, and another per test
with a short one for the unanswered captcha.
"""

import time

import pytest

from scripted_llm import content_text
from smoothd_support import (
    get_task,
    llm_env,
    playwright_chromium,
    scripted_model,
    serve,
    wait_status,
)

pytest.importorskip("playwright.sync_api")

RESULT_TIMEOUT = 120
START = "/captcha/start.html"


@pytest.fixture(scope="module")
def llm():
    yield from scripted_model()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, llm):
    yield from serve(request.param, llm_env(llm.base_url, SMOOTHD_CAPTCHA_TIMEOUT_SECONDS="120"))


@pytest.fixture(scope="module")
def chromium():
    yield from playwright_chromium()


@pytest.fixture(autouse=True)
def _needs_browser(browser):
    """Every test here drives Chromium."""


def events(server, tid: str, name: str = "captcha") -> list[dict]:
    r = get_task(server, tid, event_t=0)
    assert r.status_code in (200, 202), r.text
    return [e for e in r.json()["r"].get("events") or [] if e["name"] == name]


def wait_event(server, tid: str, state: str, timeout: float = 60) -> dict:
    """The payload of the task's first `captcha` event in `state`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in events(server, tid):
            if e["payload"].get("state") == state:
                return e["payload"]
        r = get_task(server, tid)
        assert r.json()["r"]["status"] in ("waiting", "running"), f"the task ended first: {r.json()['r']}"
        time.sleep(0.2)
    raise AssertionError(f"no captcha event {state!r} within {timeout}s: {events(server, tid)}")


def steps_of(server, tid: str) -> list[dict]:
    r = server.request("GET", f"/v1/task/{tid}/steps")
    assert r.status_code == 200, r.text
    return r.json()["r"]


def views(llm, marker) -> list[str]:
    """The page view of each request the model got."""
    out = []
    for body in llm.requests(marker):
        users = [m for m in body["messages"] if m.get("role") == "user"]
        out.append(content_text(users[-1]["content"]) if users else "")
    return out


def to_the_report(llm, name: str, then: list) -> str:
    return llm.script(name, [[{"op": "click", "target": {"text": "Open the report"}}], then])


def test_a_person_solves_the_captcha_in_the_live_view_and_the_agent_carries_on(client, server, site, llm, chromium):
    marker = to_the_report(llm, "solve", [{"op": "done", "output_from": r"Report code: (\S+)"}])
    task = client.run(f"{marker} Read the report code.", url=site.url(START), max_steps=6, use_captcha_solver=True)
    tid = task.id()
    waiting = wait_event(server, tid, "waiting")
    assert waiting["kind"] == "recaptcha" and waiting["solved"] is None, waiting
    assert waiting["url"].endswith("/captcha/report.html"), waiting
    assert "reCAPTCHA" in waiting["description"] and "live view" in waiting["message"], waiting
    live_url = waiting["live_url"]
    assert live_url.startswith(server.base + f"/live/{tid}?token=") and "interactive=true" in live_url, live_url

    # Paused: the model got the first step only, and gets nothing more while no one answers.
    asked = len(llm.requests(marker))
    assert asked == 1, asked
    time.sleep(1.5)
    assert len(llm.requests(marker)) == asked, "the model was asked while the agent waited for a person"
    assert events(server, tid, "step") and get_task(server, tid).json()["r"]["status"] == "running"

    ctx = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = ctx.new_page()
        page.goto(live_url)
        page.wait_for_function("window.live && window.live.frames > 0 && window.live.meta", timeout=60_000)
        status = page.evaluate("window.live.meta.status")
        assert "waiting for a person to solve the captcha" in status, status
        # The person clicks the widget's checkbox: the label covers 10-50% of the width and
        # 30-60% of the height of the task's viewport.
        box = page.locator("#screen").bounding_box()
        assert box and box["width"] > 100, box
        page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.45)
        result = task.result(timeout=RESULT_TIMEOUT)
    finally:
        ctx.close()

    assert result.status == "done", result
    assert result.output == "RPT-7731", result
    assert len(llm.requests(marker)) == asked + 1
    # The model's next view is the page after the captcha, with no word of one.
    after = views(llm, marker)[-1]
    assert "Report code: RPT-7731" in after and "A captcha is on this page" not in after, after
    solved = [e["payload"] for e in events(server, tid) if e["payload"]["state"] == "solved"]
    assert len(solved) == 1 and solved[0]["solved"] is True and solved[0]["waited_ms"] >= 1500, solved
    # The step that waited says so, with how long.
    steps = steps_of(server, tid)
    waited = steps[1]["actions"][0]
    assert waited["name"] == "wait_for_human" and waited["args"]["kind"] == "recaptcha", steps[1]
    assert waited["args"]["waited_ms"] >= 1500 and waited["result"].startswith("solved after"), waited
    assert [a["name"] for a in steps[1]["actions"][1:]] == ["done"], steps[1]


def test_cancel_stops_a_task_paused_on_a_captcha(client, server, site, llm):
    marker = to_the_report(llm, "cancel", [{"op": "done", "output": "never"}])
    task = client.run(f"{marker} Read the report code.", url=site.url(START), max_steps=6, use_captcha_solver=True)
    tid = task.id()
    wait_event(server, tid, "waiting")
    started = time.monotonic()
    r = server.request("DELETE", f"/v1/task/{tid}")
    assert r.status_code in (200, 202), r.text
    final = wait_status(server, tid, ("cancelled",), timeout=15)
    assert final["status"] == "cancelled" and time.monotonic() - started < 15
    assert len(llm.requests(marker)) == 1


def test_without_the_solver_the_model_is_told_and_nothing_waits(client, server, site, llm):
    marker = to_the_report(
        llm, "nosolver", [{"op": "done", "output_from": r"(A captcha is on this page)", "success": False}]
    )
    started = time.monotonic()
    result = client.run(
        f"{marker} Read the report code.", url=site.url(START), max_steps=6, use_captcha_solver=False
    ).result(timeout=RESULT_TIMEOUT)
    assert result.status == "failed" and "A captcha is on this page" in (result.error or ""), result
    assert time.monotonic() - started < 60
    view = views(llm, marker)[-1]
    assert "A captcha is on this page (reCAPTCHA widget (.g-recaptcha)); you cannot solve captchas" in view, view
    assert events(server, result.id) == []
    assert all(a["name"] != "wait_for_human" for s in steps_of(server, result.id) for a in s["actions"])


def test_a_page_that_talks_about_captchas_is_not_one(client, server, site, llm):
    marker = llm.script("about", [[{"op": "done", "output_from": r"Support code: (\S+)"}]])
    result = client.run(
        f"{marker} Read the support code.", url=site.url("/captcha/about.html"), max_steps=4, use_captcha_solver=True
    ).result(timeout=RESULT_TIMEOUT)
    assert result.status == "done" and result.output == "SUP-4410", result
    view = views(llm, marker)[-1]
    assert "g-recaptcha" in view and "A captcha is on this page" not in view, view
    assert events(server, result.id) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_no_one_answering_fails_the_task_with_captcha_not_solved(backend, llm, site):
    from smoothd_support import close_client, make_client

    for srv in serve(backend, llm_env(llm.base_url, SMOOTHD_CAPTCHA_TIMEOUT_SECONDS="2")):
        c = make_client(srv.base + "/", srv.key)
        try:
            marker = to_the_report(llm, "unsolved", [{"op": "done", "output": "never"}])
            started = time.monotonic()
            result = c.run(
                f"{marker} Read the report code.", url=site.url(START), max_steps=6, use_captcha_solver=True
            ).result(timeout=RESULT_TIMEOUT)
            took = time.monotonic() - started
            assert result.status == "failed", result
            assert "captcha not solved" in result.error and "reCAPTCHA" in result.error, result.error
            assert took >= 2 and took < 60, took
            assert len(llm.requests(marker)) == 1
            states = [e["payload"]["state"] for e in events(srv, result.id)]
            assert states == ["waiting", "not_solved"], states
            last = events(srv, result.id)[-1]["payload"]
            assert last["solved"] is False and last["waited_ms"] >= 2000, last
            steps = steps_of(srv, result.id)
            assert len(steps) == 2 and "captcha not solved" in steps[1]["error"], steps
            assert steps[1]["actions"][0]["name"] == "wait_for_human", steps[1]
            assert steps[1]["actions"][0]["result"] == "not solved within 2 s", steps[1]
        finally:
            close_client(c)
