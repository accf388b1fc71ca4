"""Interactive sessions (task: null): events in and out, answers, close and cancel, long-polls."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from smooth import SmoothAsyncClient, ToolCallError
from smooth.models import TaskEvent
from smoothd_support import detail, get_task, wait_final, wait_status

# An action every build answers at once without a browser: 400, unknown action.
UNKNOWN = {"name": "teleport", "input": {}}


def js(code: str, args=None) -> dict:
    return {"name": "evaluate_js", "input": {"js": code, "args": args}}


def open_session(client, server, cleanup_tasks):
    s = client.session()
    cleanup_tasks.append(s.id())
    wait_status(server, s.id(), "running", timeout=30)
    return s


def post_event(server, tid, name, payload, eid=None, http=None):
    body = {"name": name, "payload": payload}
    if eid is not None:
        body["id"] = eid
    if http is None:
        r = server.request("POST", f"/v1/task/{tid}/event", json=body)
    else:
        r = http.post(server.url(f"/v1/task/{tid}/event"), json=body, timeout=30)
    assert r.status_code == 200, f"POST event {body} -> {r.status_code} {r.text}"
    rid = r.json()["r"]["id"]
    if eid is not None:
        assert rid == eid, r.text
    return rid


class Poller:
    """Polls GET /v1/task/{id}?event_t=T the way the SDK does and checks every answer."""

    def __init__(self, server, tid):
        self.server, self.tid = server, tid
        self.t = 0
        self.events: list[dict] = []
        self.status = None
        self.code = None
        self.http = requests.Session()
        self.http.headers["apikey"] = server.key

    def poll(self) -> list[dict]:
        r = self.http.get(self.server.url(f"/v1/task/{self.tid}"), params={"event_t": self.t}, timeout=30)
        assert r.status_code in (200, 202), f"poll -> {r.status_code} {r.text}"
        body = r.json()["r"]
        self.status, self.code = body["status"], r.status_code
        assert (r.status_code == 200) == (body["status"] in ("done", "failed", "cancelled")), (
            f"HTTP {r.status_code} with status {body['status']}"
        )
        evs = body.get("events") or []
        ts = [e["timestamp"] for e in evs]
        assert all(isinstance(x, int) for x in ts), evs
        assert all(x > self.t for x in ts), f"events at or before event_t={self.t}: {ts}"
        assert ts == sorted(ts) and len(set(ts)) == len(ts), f"timestamps not strictly increasing: {ts}"
        if evs:
            self.t = ts[-1]
        self.events.extend(evs)
        return evs

    def until(self, cond, timeout=60.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if cond(self):
                return
            if self.status in ("done", "failed", "cancelled"):
                break
        raise AssertionError(f"{what} not met (status {self.status}, {len(self.events)} events)")

    def answers(self, ids) -> dict[str, dict]:
        want = set(ids)
        return {e["id"]: e for e in self.events if e["id"] in want}


def check_no_duplicates(events):
    seen = [(e["id"], e["timestamp"]) for e in events]
    ts = [t for _, t in seen]
    assert len(set(ts)) == len(ts), "an event was delivered twice"
    assert ts == sorted(ts), "events out of order across polls"


# --- lifecycle ---


def test_session_cancel_via_delete(server, client, cleanup_tasks):
    s = open_session(client, server, cleanup_tasks)
    t0 = time.monotonic()
    r = get_task(server, s.id(), event_t=0)
    assert time.monotonic() - t0 < 3, "a poll with event_t=0 must not be held"
    assert r.status_code == 202 and r.json()["r"]["status"] == "running", r.text

    assert s.close(force=True) is True
    res = s.result(timeout=30)
    assert res.status == "cancelled", res
    # The SDK may mark its handle cancelled by itself; the server must agree within seconds.
    final = wait_final(server, s.id(), timeout=10)
    assert final["status"] == "cancelled", final
    r = get_task(server, s.id())
    assert r.status_code == 200, r.text

    # A finished session accepts no more events.
    r = server.request("POST", f"/v1/task/{s.id()}/event", json={"name": "browser_action", "payload": UNKNOWN})
    assert 400 <= r.status_code < 500, f"event to a cancelled session -> {r.status_code} {r.text}"


def test_session_graceful_close(server, client, cleanup_tasks):
    """close(force=False) waits for the `close` answer: it must arrive before the final status."""
    s = open_session(client, server, cleanup_tasks)
    t0 = time.monotonic()
    assert s.close(force=False) is True
    res = s.result(timeout=30)
    elapsed = time.monotonic() - t0
    assert res.status == "done", res
    assert elapsed < 15, f"graceful close took {elapsed:.1f}s"
    evs = get_task(server, s.id(), event_t=0).json()["r"]["events"]
    closes = [e for e in evs if e["name"] == "session_action"]
    assert len(closes) == 1, evs
    assert closes[0]["payload"]["code"] == 200, closes
    out = closes[0]["payload"]["output"]
    assert out["output"] is True and "credits_used" in out and "duration" in out, out


def test_session_context_manager_after_graceful_close(server, client, cleanup_tasks):
    """`with client.session()` closes with DELETE on exit, even after a graceful close."""
    with client.session() as s:
        cleanup_tasks.append(s.id())
        assert s.close(force=False) is True
    assert wait_final(server, s.id())["status"] == "done"


def test_close_answer_is_served_before_the_final_status(server, client, cleanup_tasks):
    """The protocol trap, by raw HTTP: the SDK ignores events of the first final response."""
    s = open_session(client, server, cleanup_tasks)
    sid = s.id()
    post_event(server, sid, "session_action", {"name": "close"}, eid="close-1")
    # Read without acknowledging (event_t=0) until the answer shows up.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = get_task(server, sid, event_t=0)
        body = r.json()["r"]
        answer = [e for e in body.get("events") or [] if e["id"] == "close-1"]
        if answer:
            assert body["status"] in ("waiting", "running"), (
                f"the close answer was first served with status {body['status']}: the SDK would never read it"
            )
            assert r.status_code == 202
            assert answer[0]["name"] == "session_action" and answer[0]["payload"]["code"] == 200, answer
            break
        assert body["status"] in ("waiting", "running"), f"session ended before answering close: {body}"
        time.sleep(0.05)
    else:
        raise AssertionError("no answer to the close event within 20s")
    # Acknowledge it by polling past it: the session may now end, promptly (no grace wait).
    t0 = time.monotonic()
    p = Poller(server, sid)
    p.t = answer[0]["timestamp"]
    p.until(lambda p: p.status == "done", timeout=20, what="done after ack")
    assert time.monotonic() - t0 < 4, "session lingered after the close answer was acknowledged"


# --- answers to actions ---


def test_browser_actions_through_the_sdk(server, client, cleanup_tasks, browser, site):
    with client.session() as s:
        cleanup_tasks.append(s.id())
        r = s.goto(site.url("/index.html"))
        assert r.duration >= 0 and r.credits_used >= 0, r
        # The three forms of evaluate_js; values come back as JSON.
        assert s.evaluate_js("document.title").output == "Conformance home"
        assert s.evaluate_js("(args) => args.a + args.b", {"a": 2, "b": 40}).output == 42
        assert s.evaluate_js("return document.querySelector('h1').textContent").output == (
            "Hello from the conformance site"
        )
        assert s.evaluate_js("({n: 1, list: [1, 'a'], nested: {ok: true}})").output == {
            "n": 1,
            "list": [1, "a"],
            "nested": {"ok": True},
        }
        # The deprecated twin answers the raw output object.
        out = s.exec_js("location.pathname")
        assert out["output"] == "/index.html", out
        # A script that throws is the user's error (400 -> ToolCallError) with its message.
        with pytest.raises(ToolCallError, match="boom here"):
            s.evaluate_js("throw new Error('boom here')")
        # Navigation that fails is the user's error too.
        with pytest.raises(ToolCallError):
            s.goto("http://127.0.0.1:1/refused")
        # The page survived all that.
        s.goto(site.url("/second.html"))
        assert s.evaluate_js("document.title").output == "Second page"
        # No agent in this build: extract and run_task are internal errors (500 -> RuntimeError).
        with pytest.raises(RuntimeError):
            s.extract({"type": "object", "properties": {"t": {"type": "string"}}}, "the title")
        with pytest.raises(RuntimeError):
            s.run_task("do something", max_steps=2)
        # Unknown action: a 400 answer, which the SDK raises as ToolCallError.
        with pytest.raises(ToolCallError):
            s._run_async(
                s._async_handle._send_event(TaskEvent(name="browser_action", payload=UNKNOWN), has_result=True)
            )
        assert get_task(server, s.id()).json()["r"]["status"] == "running"
    assert wait_final(server, s.id(), timeout=10)["status"] == "cancelled"


def test_sessions_are_isolated_browser_contexts(server, client, cleanup_tasks, browser, site):
    a = open_session(client, server, cleanup_tasks)
    b = open_session(client, server, cleanup_tasks)
    a.goto(site.url("/index.html"))
    a.evaluate_js("localStorage.setItem('who', 'a'); document.cookie = 'who=a; path=/'; return 1")
    b.goto(site.url("/second.html"))
    assert b.evaluate_js("document.title").output == "Second page"
    assert a.evaluate_js("document.title").output == "Conformance home"
    assert b.evaluate_js("[localStorage.getItem('who'), document.cookie]").output == [None, ""]
    for s in (a, b):
        assert s.close(force=False) is True


def test_device_emulation(server, client, cleanup_tasks, browser, site):
    widths = {}
    for device in ("mobile", "desktop", "desktop-lg"):
        s = client.session(device=device)
        cleanup_tasks.append(s.id())
        s.goto(site.url("/index.html"))
        widths[device] = s.evaluate_js("window.innerWidth").output
        s.close(force=True)
    assert widths["mobile"] < widths["desktop"] <= widths["desktop-lg"], widths


def test_unknown_event_names_and_actions_answer_400(server, client, cleanup_tasks):
    s = open_session(client, server, cleanup_tasks)
    sid = s.id()
    sent = {
        "u-1": ("bogus_event", {"x": 1}),
        "u-2": ("browser_action", {"name": "teleport"}),
        "u-3": ("session_action", {"name": "explode"}),
        "u-4": ("browser_action", {}),
    }
    for eid, (name, payload) in sent.items():
        post_event(server, sid, name, payload, eid=eid)
    generated = post_event(server, sid, "browser_action", UNKNOWN)  # server picks the id
    p = Poller(server, sid)
    p.until(lambda p: len(p.answers([*sent, generated])) == len(sent) + 1, what="answers to 5 events")
    got = p.answers([*sent, generated])
    for eid, (name, _) in sent.items():
        e = got[eid]
        assert e["name"] == name, e
        assert e["payload"]["code"] == 400, e
        assert isinstance(e["payload"]["output"], str) and e["payload"]["output"], e
    assert got[generated]["name"] == "browser_action" and got[generated]["payload"]["code"] == 400
    # Answered in the order the events were sent.
    order = [e["id"] for e in p.events if e["id"] in got]
    assert order == [*sent, generated], order


@pytest.mark.parametrize(
    "body,field",
    [
        ({"payload": {}}, "name"),
        ({"name": "browser_action"}, "payload"),
        ({"name": "browser_action", "payload": "goto"}, "payload"),
        ({"name": "browser_action", "payload": {}, "id": 7}, "id"),
    ],
)
def test_malformed_events_are_rejected(server, client, cleanup_tasks, body, field):
    s = open_session(client, server, cleanup_tasks)
    r = server.request("POST", f"/v1/task/{s.id()}/event", json=body)
    assert r.status_code in (400, 422), f"{body} -> {r.status_code} {r.text}"
    assert field in detail(r), r.text


# --- ordering under bursts ---


def burst_payload(i: int) -> dict:
    """evaluate_js returning i: each answer proves it belongs to its own request."""
    return js(f"{i}")


def check_burst_answers(p, posted, has_browser):
    got = p.answers(posted)
    assert set(got) == set(posted), f"missing answers: {sorted(set(posted) - set(got))[:10]}"
    check_no_duplicates(p.events)
    ids = [e["id"] for e in p.events if e["id"] in got]
    assert len(ids) == len(set(ids)) == len(posted), "an answer was delivered twice"
    for i, eid in enumerate(posted):
        e = got[eid]
        assert e["name"] == "browser_action", e
        if has_browser:
            assert e["payload"]["code"] == 200 and e["payload"]["output"]["output"] == i, e
        else:
            assert e["payload"]["code"] == 500, e
    return ids


def test_burst_of_200_sequential_events(server, client, cleanup_tasks, has_browser):
    s = open_session(client, server, cleanup_tasks)
    sid = s.id()
    http = requests.Session()
    http.headers["apikey"] = server.key
    posted = [f"seq-{i:03d}" for i in range(200)]
    for i, eid in enumerate(posted):
        post_event(server, sid, "browser_action", burst_payload(i), eid=eid, http=http)
    p = Poller(server, sid)
    p.until(lambda p: len(p.answers(posted)) == len(posted), timeout=120, what="200 answers")
    ids = check_burst_answers(p, posted, has_browser)
    assert ids == posted, "answers not in the order the events were sent"
    assert s.close(force=False) is True
    assert s.result(timeout=30).status == "done"


def test_burst_of_200_concurrent_events_while_polling(server, client, cleanup_tasks, has_browser):
    s = open_session(client, server, cleanup_tasks)
    sid = s.id()
    posted = [f"par-{i:03d}" for i in range(200)]
    p = Poller(server, sid)
    stop = threading.Event()
    errors = []

    def poll_loop():
        try:
            while not stop.is_set() and len(p.answers(posted)) < len(posted):
                p.poll()
        except Exception as e:  # surfaced below
            errors.append(e)

    poller = threading.Thread(target=poll_loop)
    poller.start()
    local = threading.local()

    def send(i):
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.headers["apikey"] = server.key
        post_event(server, sid, "browser_action", burst_payload(i), eid=posted[i], http=local.http)

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, range(len(posted))))
        poller.join(120)
    finally:
        stop.set()
        poller.join(30)
    assert not errors, errors
    check_burst_answers(p, posted, has_browser)


def test_async_sdk_gathered_actions_all_answered(server, has_browser):
    async def main():
        async with SmoothAsyncClient(api_key=server.key, base_url=server.base + "/") as c:
            s = await c.session()
            try:
                results = await asyncio.wait_for(
                    asyncio.gather(*[s.evaluate_js(f"{i} + 1") for i in range(50)], return_exceptions=True), 120
                )
            finally:
                await s.close(force=True)
            return s.id(), results

    sid, results = asyncio.run(main())
    assert len(results) == 50
    for i, r in enumerate(results):
        if has_browser:
            assert not isinstance(r, BaseException) and r.output == i + 1, repr(r)
        else:
            assert isinstance(r, RuntimeError), repr(r)
    assert wait_final(server, sid, timeout=10)["status"] == "cancelled"
    evs = get_task(server, sid, event_t=0).json()["r"]["events"]
    answers = [e for e in evs if e["name"] == "browser_action"]
    assert len(answers) == 50 and len({e["id"] for e in answers}) == 50, len(answers)


# --- long-polls ---


def first_answer(server, sid):
    post_event(server, sid, "browser_action", UNKNOWN, eid="lp-0")
    p = Poller(server, sid)
    p.until(lambda p: "lp-0" in p.answers(["lp-0"]), what="first answer")
    return p


def test_long_poll_returns_at_once_on_new_event(server, client, cleanup_tasks):
    s = open_session(client, server, cleanup_tasks)
    p = first_answer(server, s.id())
    timer = threading.Timer(1.5, lambda: post_event(server, s.id(), "browser_action", UNKNOWN, eid="lp-1"))
    timer.start()
    t0 = time.monotonic()
    try:
        evs = p.poll()
    finally:
        timer.join()
    elapsed = time.monotonic() - t0
    if not evs:
        # Without long-polling the poll returns empty at once; the next one must carry it.
        p.until(lambda p: "lp-1" in p.answers(["lp-1"]), timeout=10, what="answer lp-1")
        pytest.fail(f"poll with event_t>0 was not held: returned empty after {elapsed:.2f}s")
    assert [e["id"] for e in evs] == ["lp-1"], evs
    assert 1.0 <= elapsed < 5, f"held poll answered after {elapsed:.2f}s (event posted at 1.5s)"


def test_long_poll_returns_at_once_on_status_change(server, client, cleanup_tasks):
    s = open_session(client, server, cleanup_tasks)
    p = first_answer(server, s.id())
    timer = threading.Timer(1.5, lambda: server.request("DELETE", f"/v1/task/{s.id()}"))
    timer.start()
    t0 = time.monotonic()
    try:
        p.poll()
        while p.status == "running" and time.monotonic() - t0 < 15:
            p.poll()
    finally:
        timer.join()
    elapsed = time.monotonic() - t0
    assert p.status == "cancelled" and p.code == 200, (p.status, p.code)
    assert elapsed < 6, f"cancel seen after {elapsed:.2f}s"


def test_long_poll_is_bounded_under_the_sdk_timeout(server, client, cleanup_tasks):
    s = open_session(client, server, cleanup_tasks)
    p = first_answer(server, s.id())
    t0 = time.monotonic()
    evs = p.poll()
    elapsed = time.monotonic() - t0
    assert evs == [] and p.code == 202, (evs, p.code)
    assert elapsed < 25, f"poll held {elapsed:.1f}s: the SDK gives up after 30s"
