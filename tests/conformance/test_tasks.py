"""One-shot tasks: submit, result, validation, listing, cancel, data erasure."""

import time

import pytest

from smooth import ApiError
from smoothd_support import detail, get_task, task_ids_page, wait_final, wait_status


def test_task_without_model_fails_with_clear_error(client, server):
    before = int(time.time())
    h = client.run("Find the title of example.com", url="https://example.com", max_steps=4)
    res = h.result(timeout=60)
    assert res.id == h.id()
    assert res.status == "failed", res
    error = getattr(res, "error", None)
    assert isinstance(error, str) and "no model configured" in error, f"error: {error!r}"
    assert res.device == "desktop", res
    assert isinstance(res.created_at, int) and before - 5 <= res.created_at <= time.time() + 5, res.created_at
    # A final task answers 200, with the same status for every later read.
    r = get_task(server, h.id(), event_t=0)
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    assert r.json()["r"]["status"] == "failed"


def test_submit_answers_with_a_waiting_or_running_task(server):
    r = server.request("POST", "/v1/task", json={"task": "hello", "device": "mobile"})
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    t = r.json()["r"]
    assert t["id"] and t["status"] in ("waiting", "running"), t
    assert t["device"] == "mobile", t
    final = wait_final(server, t["id"])
    assert final["status"] == "failed" and final["device"] == "mobile", final


@pytest.mark.parametrize("device", ["desktop", "mobile", "desktop-lg"])
def test_devices_accepted(client, device):
    res = client.run("x", device=device, max_steps=2).result(timeout=60)
    assert res.status == "failed" and res.device == device, res


@pytest.mark.parametrize("steps", [2, 128])
def test_max_steps_bounds_accepted(client, steps):
    assert client.run("x", max_steps=steps).result(timeout=60).status == "failed"


def test_full_sdk_payload_is_accepted(client):
    h = client.run(
        "x",
        response_model={"type": "object", "properties": {"title": {"type": "string"}}},
        url="https://example.com",
        metadata={"user": "alice", "n": 3, "pi": 3.14, "ok": True},
        allowed_urls=["https://**.example.com/**"],
        enable_recording=False,
        use_stealth=False,
        use_adblock=False,
        use_captcha_solver=False,
        additional_tools={"screenshot": {"full_page": True}, "hover": None},
        experimental_features={"anything": 1},
        show_cursor=True,
    )
    assert h.result(timeout=60).status == "failed"


# --- validation through the SDK (inputs the SDK sends as they are) ---


SDK_INVALID = [
    ("files", {"files": ["file_does_not_exist"]}, 400),
    ("extensions", {"extensions": ["ext_does_not_exist"]}, 400),
    ("profile_id", {"profile_id": "no-such-profile"}, 400),
    ("metadata", {"metadata": {f"k{i}": i for i in range(17)}}, 422),
    ("metadata", {"metadata": {"long": "y" * 2049}}, 422),
    ("response_model", {"response_model": {"type": 12}}, 422),
    ("additional_tools", {"additional_tools": {"teleport": None}}, 422),
]


@pytest.mark.parametrize("field,kwargs,status", SDK_INVALID, ids=[f"{f}-{s}-{i}" for i, (f, _, s) in enumerate(SDK_INVALID)])
def test_sdk_invalid_input_raises_api_error(server, client, field, kwargs, status):
    before = task_ids_page(server)
    with pytest.raises(ApiError) as e:
        client.run("x", **kwargs)
    assert e.value.status_code == status, f"expected {status} naming {field}, got {e.value}"
    assert field in e.value.detail, f"detail does not name {field}: {e.value.detail!r}"
    assert task_ids_page(server) == before, "a task was created despite the error"


def test_metadata_at_limits_is_accepted(client):
    meta = {f"k{i}": "v" * 2048 for i in range(16)}
    assert client.run("x", metadata=meta, max_steps=2).result(timeout=60).status == "failed"


# --- validation by raw HTTP (inputs the SDK refuses to send) ---


RAW_INVALID = [
    ("max_steps", {"max_steps": 1}),
    ("max_steps", {"max_steps": 129}),
    ("max_steps", {"max_steps": "many"}),
    ("device", {"device": "tablet"}),
    ("metadata", {"metadata": {"nested": {"a": 1}}}),
]


@pytest.mark.parametrize("field,extra", RAW_INVALID, ids=[f"{f}-{i}" for i, (f, _) in enumerate(RAW_INVALID)])
@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_raw_invalid_input_is_422_naming_the_field(server, field, extra, prefix):
    before = task_ids_page(server)
    r = server.request("POST", f"{prefix}/task", json={"task": "x", **extra})
    assert r.status_code == 422, f"POST {prefix}/task {extra} -> {r.status_code} {r.text}"
    assert field in detail(r), f"detail does not name {field}: {r.text}"
    assert task_ids_page(server) == before, "a task was created despite the 422"


def test_malformed_json_is_400(server):
    before = task_ids_page(server)
    r = server.request("POST", "/v1/task", data=b'{"task": ', headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), f"{r.status_code} {r.text}"
    detail(r)
    r = server.request("POST", "/v1/task", json=["not", "an", "object"])
    assert r.status_code in (400, 422), f"{r.status_code} {r.text}"
    detail(r)
    assert task_ids_page(server) == before


def test_unknown_fields_are_allowed(server):
    r = server.request("POST", "/v1/task", json={"task": "x", "some_future_field": {"a": 1}, "stealth_mode": True})
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    wait_final(server, r.json()["r"]["id"])


def test_unknown_task_is_404(server, client):
    r = get_task(server, "tsk_does_not_exist")
    assert r.status_code == 404, r.text
    detail(r)
    with pytest.raises(ApiError) as e:
        client._get_task("tsk_does_not_exist")
    assert e.value.status_code == 404
    r = server.request("DELETE", "/v1/task/tsk_does_not_exist")
    assert r.status_code == 404, r.text


# --- listing ---


def test_list_tasks_newest_first_with_paging(server, client):
    ids = []
    for i in range(3):
        ids.append(client.run(f"task {i}", max_steps=2).id())
        time.sleep(0.02)
    newest_first = list(reversed(ids))

    r = server.request("GET", "/v1/task", params={"l": 3})
    assert r.status_code == 200, r.text
    items = r.json()["r"]
    assert [t["id"] for t in items] == newest_first, items
    for t in items:
        assert t["status"] in ("waiting", "running", "done", "failed", "cancelled") and isinstance(t["created_at"], int)

    r = server.request("GET", "/v1/task", params={"l": 1})
    assert [t["id"] for t in r.json()["r"]] == newest_first[:1]

    # t: only tasks created before it. Far in the past: none.
    r = server.request("GET", "/v1/task", params={"l": 10, "t": 1})
    assert r.status_code == 200 and r.json()["r"] == [], r.text
    # Paging from the newest item's time (ms when the server offers it) excludes it.
    newest = items[0]
    t = newest.get("created_at_ms", newest["created_at"] * 1000)
    r = server.request("GET", "/v1/task", params={"l": 10, "t": t})
    page = [x["id"] for x in r.json()["r"]]
    assert newest["id"] not in page and newest_first[2] in page, page

    for tid in ids:
        wait_final(server, tid)


@pytest.mark.parametrize("l", [0, 129, "abc"])
def test_list_tasks_bad_limit(server, l):
    r = server.request("GET", "/v1/task", params={"l": l})
    assert r.status_code in (400, 422), f"l={l} -> {r.status_code} {r.text}"
    assert "l" in detail(r)


# --- cancel ---


def test_cancel_waiting_task_is_immediate(server, client, cleanup_tasks):
    # Two workers: occupy both with sessions so the next task waits.
    sessions = []
    for _ in range(2):
        s = client.session()
        sessions.append(s.id())
        cleanup_tasks.append(s.id())
    for sid in sessions:
        wait_status(server, sid, "running", timeout=30)

    h = client.run("queued behind two sessions", max_steps=2)
    cleanup_tasks.append(h.id())
    time.sleep(0.5)
    r = get_task(server, h.id())
    assert r.status_code == 202 and r.json()["r"]["status"] == "waiting", r.text

    client._delete_task(h.id())
    r = get_task(server, h.id())
    assert r.status_code == 200, f"right after DELETE of a waiting task: {r.status_code} {r.text}"
    assert r.json()["r"]["status"] == "cancelled", r.text
    assert h.result(timeout=10).status == "cancelled"

    # Cancelling again is harmless.
    client._delete_task(h.id())

    for sid in sessions:
        client._delete_task(sid)
    for sid in sessions:
        assert wait_final(server, sid, timeout=15)["status"] == "cancelled"


def test_cancel_finished_task_is_harmless(server, client):
    h = client.run("x", max_steps=2)
    assert h.result(timeout=60).status == "failed"
    client._delete_task(h.id())  # must not raise
    assert get_task(server, h.id()).json()["r"]["status"] == "failed"


# --- data erasure ---


def test_erase_task_data_keeps_a_tombstone(server, client, cleanup_tasks):
    s = client.session()
    cleanup_tasks.append(s.id())
    sid = s.id()
    wait_status(server, sid, "running")

    # A running task's data cannot be erased.
    r = server.request("DELETE", f"/v1/task/{sid}/data")
    assert r.status_code == 409, f"{r.status_code} {r.text}"
    detail(r)

    # Leave an event behind, then close gracefully.
    r = server.request("POST", f"/v1/task/{sid}/event", json={"name": "bogus", "payload": {}, "id": "evt-erase-1"})
    assert r.status_code == 200, r.text
    assert s.close(force=False) is True
    final = wait_final(server, sid)
    assert final["status"] == "done", final
    events = get_task(server, sid, event_t=0).json()["r"]["events"]
    assert any(e["id"] == "evt-erase-1" for e in events), events

    r = server.request("DELETE", f"/v1/task/{sid}/data")
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    r = get_task(server, sid, event_t=0)
    assert r.status_code == 200, r.text
    t = r.json()["r"]
    assert t["id"] == sid and t["status"] == "done", t
    assert not t.get("events"), f"events survived erasure: {t.get('events')}"
    assert t.get("output") is None, t

    # Still listed (tombstone), and unknown ids are 404.
    assert sid in task_ids_page(server)
    r = server.request("DELETE", "/v1/task/tsk_does_not_exist/data")
    assert r.status_code == 404, r.text


def test_erase_failed_task_data(server, client):
    h = client.run("x", metadata={"secret": "s3cr3t"}, max_steps=2)
    assert h.result(timeout=60).status == "failed"
    r = server.request("DELETE", f"/v1/task/{h.id()}/data")
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    t = get_task(server, h.id(), event_t=0).json()["r"]
    assert t["id"] == h.id() and t["status"] == "failed", t
    assert "s3cr3t" not in str(t), t


# --- media URLs: null while they may still appear, "" or a URL once final ---


def test_media_urls_while_running_and_once_final(server, client, cleanup_tasks):
    s = client.session()
    cleanup_tasks.append(s.id())
    running = wait_status(server, s.id(), "running")
    assert running["recording_url"] is None, f"recording_url must be null while running: {running}"
    r = get_task(server, s.id(), downloads="true").json()["r"]
    assert r["downloads_url"] is None, f"downloads_url must be null while running: {r}"
    s.close(force=True)
    final = wait_final(server, s.id())
    assert isinstance(final["recording_url"], str), f"recording_url still null once final: {final}"
    r = get_task(server, s.id(), downloads="true").json()["r"]
    assert isinstance(r["downloads_url"], str), f"downloads_url (downloads=true) still null once final: {r}"


def test_sdk_media_urls_of_a_finished_task_do_not_hang(client):
    h = client.run("x", max_steps=2, enable_recording=False)
    assert h.result(timeout=60).status == "failed"
    t0 = time.monotonic()
    for call in (h.recording_url, h.downloads_url):
        try:
            url = call(timeout=10)
            # The SDK hands back a cached "" as is; a fresh read of "" raises 404.
            assert url == "" or url.startswith("http"), url
        except ApiError as e:
            assert e.status_code == 404, e
    assert time.monotonic() - t0 < 8, "the SDK kept polling: the URL stayed null after the task ended"
