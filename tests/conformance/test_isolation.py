"""Two API keys see only their own tasks, profiles, files and extensions."""

import secrets

import pytest

from smooth import ApiError
from smoothd_support import extension_zip, get_task, named, task_ids_page, wait_status


@pytest.fixture
def owned(server, client, cleanup_tasks):
    """Things of the first key: a finished task, a running session, a profile, a file, an extension."""
    task = client.run("mine", max_steps=2)
    assert task.result(timeout=60).status == "failed"
    session = client.session()
    cleanup_tasks.append(session.id())
    wait_status(server, session.id(), "running")
    profile = client.create_profile("iso-" + secrets.token_hex(4))
    file = client.upload_file(named(b"private", "private.txt"))
    ext = client.upload_extension(named(extension_zip(), "private.zip"))
    yield {
        "task": task.id(),
        "session": session.id(),
        "profile": profile.id,
        "file": file.id,
        "extension": ext.id,
    }
    client.delete_profile(profile.id)
    client.delete_file(file.id)
    client.delete_extension(ext.id)


def test_other_key_gets_404_on_tasks(server, owned):
    other = server.other_key
    for tid in (owned["task"], owned["session"]):
        for prefix in ("/v1", "/api/v1"):
            r = server.request("GET", f"{prefix}/task/{tid}", key=other, params={"event_t": 0})
            assert r.status_code == 404, f"GET {prefix}/task/<first key's> -> {r.status_code} {r.text}"
        r = server.request("DELETE", f"/v1/task/{tid}", key=other)
        assert r.status_code == 404, f"DELETE -> {r.status_code} {r.text}"
        r = server.request(
            "POST", f"/v1/task/{tid}/event", key=other, json={"name": "session_action", "payload": {"name": "close"}}
        )
        assert r.status_code == 404, f"POST event -> {r.status_code} {r.text}"
        r = server.request("PUT", f"/v1/task/{tid}", key=other, json={"tool_response": {"id": "x", "code": 200, "output": "y"}})
        assert r.status_code == 404, f"PUT -> {r.status_code} {r.text}"
    r = server.request("DELETE", f"/v1/task/{owned['task']}/data", key=other)
    assert r.status_code == 404, f"DELETE data -> {r.status_code} {r.text}"
    # Untouched for the owner.
    assert get_task(server, owned["session"]).json()["r"]["status"] == "running"
    assert get_task(server, owned["task"]).json()["r"]["status"] == "failed"


def test_other_key_does_not_list_them(server, client, other_client, owned):
    assert owned["task"] in task_ids_page(server)
    other_tasks = task_ids_page(server, key=server.other_key)
    assert owned["task"] not in other_tasks and owned["session"] not in other_tasks, other_tasks
    assert owned["profile"] not in [p.id for p in other_client.list_profiles()]
    assert owned["extension"] not in [e.id for e in other_client.list_extensions()]
    assert owned["profile"] in [p.id for p in client.list_profiles()]
    assert owned["extension"] in [e.id for e in client.list_extensions()]


def test_other_key_gets_404_on_resources(other_client, owned):
    for call, arg in (
        (other_client.delete_profile, owned["profile"]),
        (other_client.delete_file, owned["file"]),
        (other_client.delete_extension, owned["extension"]),
    ):
        with pytest.raises(ApiError) as e:
            call(arg)
        assert e.value.status_code == 404, f"{call.__name__}: {e.value}"
    with pytest.raises(ApiError) as e:
        other_client._get_task(owned["task"])
    assert e.value.status_code == 404


def test_other_key_cannot_reference_them_in_a_task(server, other_client, owned):
    before = task_ids_page(server, key=server.other_key)
    for field, value in (
        ("files", {"files": [owned["file"]]}),
        ("extensions", {"extensions": [owned["extension"]]}),
        ("profile_id", {"profile_id": owned["profile"]}),
    ):
        with pytest.raises(ApiError) as e:
            other_client.run("steal", **value)
        assert e.value.status_code == 400 and field in e.value.detail, e.value
    assert task_ids_page(server, key=server.other_key) == before


def test_other_key_has_its_own_namespace(server, client, other_client):
    """The second key works on its own things: its tasks are invisible to the first key."""
    h = other_client.run("theirs", max_steps=2)
    assert h.result(timeout=60).status == "failed"
    assert h.id() in task_ids_page(server, key=server.other_key)
    assert h.id() not in task_ids_page(server)
    r = get_task(server, h.id())
    assert r.status_code == 404, r.text
    p = other_client.create_profile()
    assert p.id not in [x.id for x in client.list_profiles()]
    other_client.delete_profile(p.id)
