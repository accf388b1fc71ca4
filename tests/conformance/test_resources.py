"""Profiles, uploaded files and extensions through the SDK."""

import secrets
import time

import pytest

from smooth import ApiError
from smoothd_support import detail, extension_zip, named


# --- profiles ---


def test_profile_create_list_delete(client):
    pid = "conf-" + secrets.token_hex(4)
    p = client.create_profile(pid)
    assert p.id == pid
    assert p.cookie_domains == [] and p.cookie_count == 0, p
    assert isinstance(p.profile_size_bytes, int), p

    generated = client.create_profile()
    assert generated.id and generated.id != pid

    ids = [x.id for x in client.list_profiles()]
    assert pid in ids and generated.id in ids, ids

    with pytest.raises(ApiError) as e:
        client.create_profile(pid)
    assert e.value.status_code == 409, e.value

    client.delete_profile(pid)
    ids = [x.id for x in client.list_profiles()]
    assert pid not in ids and generated.id in ids, ids

    with pytest.raises(ApiError) as e:
        client.delete_profile(pid)
    assert e.value.status_code == 404, e.value

    # A deleted profile can no longer be used by a task.
    with pytest.raises(ApiError) as e:
        client.run("x", profile_id=pid)
    assert e.value.status_code == 400 and "profile_id" in e.value.detail, e.value

    client.delete_profile(generated.id)


def test_profile_id_can_be_reused_after_delete(client):
    pid = "conf-" + secrets.token_hex(4)
    client.create_profile(pid)
    client.delete_profile(pid)
    assert client.create_profile(pid).id == pid
    client.delete_profile(pid)


def test_profile_invalid_id_is_rejected(server):
    r = server.request("POST", "/v1/profile", json={"id": "../../etc/passwd"})
    assert r.status_code in (400, 422), f"{r.status_code} {r.text}"
    assert "id" in detail(r)


def test_profile_usable_by_task(client, cleanup_tasks):
    p = client.create_profile()
    h = client.run("x", profile_id=p.id, max_steps=2)
    cleanup_tasks.append(h.id())
    assert h.result(timeout=60).status == "failed"
    client.delete_profile(p.id)


# --- files ---


def test_file_upload_use_delete(client, cleanup_tasks):
    f = client.upload_file(named(b"hello, world\n", "notes.txt"), purpose="a test note")
    assert f.id

    h = client.run("read the file", files=[f.id], max_steps=2)
    cleanup_tasks.append(h.id())
    assert h.result(timeout=60).status == "failed"

    client.delete_file(f.id)
    with pytest.raises(ApiError) as e:
        client.delete_file(f.id)
    assert e.value.status_code == 404, e.value
    with pytest.raises(ApiError) as e:
        client.run("read the file", files=[f.id])
    assert e.value.status_code == 400 and "files" in e.value.detail, e.value


def test_file_upload_over_limit_is_413(server, client):
    data = b"x" * (server.max_upload + 1)
    with pytest.raises(ApiError) as e:
        client.upload_file(named(data, "big.bin"))
    assert e.value.status_code == 413, e.value


def test_file_upload_at_limit_is_accepted(server, client):
    f = client.upload_file(named(b"y" * server.max_upload, "exact.bin"))
    client.delete_file(f.id)


def test_file_upload_without_file_part_is_rejected(server):
    r = server.request("POST", "/v1/file", files={"file_purpose": (None, "nothing")})
    assert 400 <= r.status_code < 500, f"{r.status_code} {r.text}"
    assert "file" in detail(r)


# --- extensions ---


def test_extension_upload_list_delete(client):
    before = time.time()
    ext = client.upload_extension(named(extension_zip(), "my-ext.zip"))
    assert ext.id

    listed = {x.id: x for x in client.list_extensions()}
    assert ext.id in listed, listed
    e = listed[ext.id]
    assert e.file_name == "my-ext.zip", e
    # creation_time: epoch (seconds or milliseconds), around now.
    ct = e.creation_time / 1000 if e.creation_time > 10**11 else e.creation_time
    assert before - 120 <= ct <= time.time() + 120, e

    client.delete_extension(ext.id)
    assert ext.id not in [x.id for x in client.list_extensions()]
    with pytest.raises(ApiError) as err:
        client.delete_extension(ext.id)
    assert err.value.status_code == 404, err.value
    with pytest.raises(ApiError) as err:
        client.run("x", extensions=[ext.id])
    assert err.value.status_code == 400 and "extensions" in err.value.detail, err.value


def test_extension_usable_by_task(client, cleanup_tasks):
    ext = client.upload_extension(named(extension_zip(), "ok.zip"))
    h = client.run("x", extensions=[ext.id], max_steps=2)
    cleanup_tasks.append(h.id())
    assert h.result(timeout=60).status == "failed"
    client.delete_extension(ext.id)


def test_extension_that_is_not_an_archive_is_400(client):
    with pytest.raises(ApiError) as e:
        client.upload_extension(named(b"this is not a zip file", "fake.zip"))
    assert e.value.status_code == 400, e.value
    assert "file" in e.value.detail or "extension" in e.value.detail, e.value
