"""Per-key limits through the real SDK: smooth-py does not retry a 429 (aiohttp_retry retries only
connection errors and 5xx), so the call raises ApiError(429) with the detail at once; the raw
answer carries Retry-After. A refused request changes nothing, the session's poller (task
reads are not counted) keeps the session usable, and after Retry-After requests pass again.
Each test uses keys of its own: buckets and slots are per key."""

import time

import pytest

from smooth import ApiError
from smoothd_support import Server, close_client, detail, make_client, wait_final, wait_status

pytestmark = pytest.mark.usefixtures("browser")

# A token every 3 s, bursts of 20.
RATE_PER_MINUTE = 20


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def limited(request):
    srv = Server(
        request.param,
        extra_env={
            "SMOOTHD_RATE_LIMIT_PER_MINUTE": str(RATE_PER_MINUTE),
            "SMOOTHD_MAX_RUNNING_PER_KEY": "1",
        },
    )
    try:
        srv.start(create_other_key=False)
        yield srv
        assert srv.stop() == 0, srv.stderr_tail()
    finally:
        srv.cleanup()


def test_rate_limit_through_the_sdk(limited, site):
    key = limited.create_key("rate")
    client = make_client(limited.base + "/", key)
    try:
        with client.session() as s:
            wait_status(limited, s.id(), "running", timeout=30, key=key)
            s.goto(site.url("/index.html"))
            assert s.evaluate_js("document.title").output == "Conformance home"
            # Spend the rest of the burst.
            spent = 0
            while True:
                try:
                    client.list_profiles()
                    spent += 1
                    assert spent <= RATE_PER_MINUTE + 10, "never refused"
                except ApiError as e:
                    refused = e
                    break
            assert refused.status_code == 429, refused
            assert refused.detail.startswith("rate_limit_per_minute:"), refused.detail
            # The raw answer: Retry-After in seconds, `detail` naming the setting.
            r = limited.request("GET", "/v1/profile", key=key)
            assert r.status_code == 429, r.text
            retry = int(r.headers["Retry-After"])
            assert 1 <= retry <= 3, retry
            assert detail(r).startswith("rate_limit_per_minute:")
            # No retry behind our back: the SDK raises at once.
            started = time.monotonic()
            with pytest.raises(ApiError) as e:
                s.evaluate_js("document.title = 'changed'")
            assert e.value.status_code == 429
            assert time.monotonic() - started < 2
            # The session lives on: its reads are not counted, so the SDK's poller survives.
            assert wait_status(limited, s.id(), "running", timeout=30, key=key)["status"] == "running"
            time.sleep(retry)
            # The refused action never reached the browser.
            assert s.evaluate_js("document.title").output == "Conformance home"
        # Closing (DELETE) is not counted either.
        assert wait_final(limited, s.id(), timeout=30, key=key)["status"] in ("done", "cancelled")
    finally:
        close_client(client)


def test_concurrency_limit_through_the_sdk(limited, site):
    key = limited.create_key("concurrency")
    client = make_client(limited.base + "/", key)
    try:
        first = client.session()
        wait_status(limited, first.id(), "running", timeout=30, key=key)
        with pytest.raises(ApiError) as e:
            client.session()
        assert e.value.status_code == 429
        assert e.value.detail.startswith("max_running_per_key:"), e.value.detail
        r = limited.request("POST", "/v1/task", key=key, json={"task": None})
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "5"
        assert "max_running_per_key" in detail(r)
        # The refused submits stored nothing.
        r = limited.request("GET", "/v1/task", key=key)
        assert [t["id"] for t in r.json()["r"]] == [first.id()]
        # Another key is not held back by this one.
        other = limited.create_key("concurrency-other")
        r = limited.request("POST", "/v1/task", key=other, json={"task": None})
        assert r.status_code == 200, r.text
        limited.request("DELETE", f"/v1/task/{r.json()['r']['id']}", key=other)
        # Closing the first session frees the slot.
        assert first.close() is True
        wait_final(limited, first.id(), timeout=30, key=key)
        with client.session() as second:
            second.goto(site.url("/index.html"))
            assert second.evaluate_js("document.title").output == "Conformance home"
        wait_final(limited, second.id(), timeout=30, key=key)
    finally:
        close_client(client)
