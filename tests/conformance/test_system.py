"""Health, readiness, the OpenAPI document, telemetry, authentication and the two URL prefixes."""

import pytest
import requests

from smooth import ApiError
from smoothd_support import close_client, detail, make_client


def test_healthz_and_readyz_need_no_key(server):
    for path in ("/healthz", "/readyz"):
        r = requests.get(server.url(path), timeout=10)
        assert r.status_code == 200, f"GET {path} -> {r.status_code} {r.text}"


def test_openapi_document_lists_paths(server):
    r = requests.get(server.url("/openapi.json"), timeout=10)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert isinstance(doc.get("paths"), dict) and doc["paths"], doc.keys()
    paths = " ".join(doc["paths"])
    for p in ("/v1/task", "/v1/profile", "/v1/file", "/v1/extension"):
        assert p in paths, f"{p} missing from /openapi.json paths: {sorted(doc['paths'])}"


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_telemetry_is_accepted(server, prefix):
    body = {"events": [{"name": "sdk.run", "properties": {"x": 1}}]}
    r = server.request("POST", f"{prefix}/telemetry", json=body)
    assert 200 <= r.status_code < 300, f"POST {prefix}/telemetry -> {r.status_code} {r.text}"
    # The SDK sends it without waiting for a key check to matter; a keyless post must not 5xx.
    r = server.request("POST", f"{prefix}/telemetry", key=None, json=body)
    assert r.status_code < 500, f"keyless telemetry -> {r.status_code} {r.text}"


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/task"),
        ("POST", "/v1/task"),
        ("GET", "/v1/profile"),
        ("GET", "/v1/extension"),
        ("GET", "/api/v1/task/tsk_whatever"),
    ],
)
def test_missing_or_wrong_key_is_401(server, method, path):
    kw = {"json": {"task": "x"}} if method == "POST" else {}
    r = server.request(method, path, key=None, **kw)
    assert r.status_code == 401, f"{method} {path} without apikey -> {r.status_code} {r.text}"
    assert detail(r)
    r = server.request(method, path, key="smd_not_a_real_key_0000000000", **kw)
    assert r.status_code == 401, f"{method} {path} with a wrong apikey -> {r.status_code} {r.text}"
    assert detail(r)


def test_sdk_with_wrong_key_raises_401(server):
    c = make_client(server.base + "/", "smd_wrong_key_wrong_key_wrong_key")
    try:
        with pytest.raises(ApiError) as e:
            c.list_profiles()
        assert e.value.status_code == 401, e.value
        with pytest.raises(ApiError) as e:
            c.run("hello")
        assert e.value.status_code == 401, e.value
    finally:
        close_client(c)


def test_sdk_base_url_with_api_prefix(server):
    """SMOOTH_BASE_URL=http://host:port/api/ must work like http://host:port/."""
    c = make_client(server.base + "/api/", server.key)
    try:
        p = c.create_profile()
        assert p.id in [x.id for x in c.list_profiles()]
        h = c.run("say hello", max_steps=2)
        res = h.result(timeout=60)
        assert res.id == h.id()
        assert res.status == "failed", res
        c.delete_profile(p.id)
        assert p.id not in [x.id for x in c.list_profiles()]
    finally:
        close_client(c)
    # Both prefixes see the same task.
    r1 = server.request("GET", f"/v1/task/{h.id()}")
    r2 = server.request("GET", f"/api/v1/task/{h.id()}")
    assert r1.status_code == r2.status_code == 200, (r1.text, r2.text)
    assert r1.json()["r"]["status"] == r2.json()["r"]["status"] == "failed"


def test_unknown_route_is_json_404(server):
    r = server.request("GET", "/v1/nope")
    assert r.status_code == 404, r.text
    assert detail(r)
