"""Signed webhooks, end to end: the real smooth-py SDK passes `experimental_features.webhook_url`
through, the scripted model runs the task to `done`, and a receiver on 127.0.0.1 checks the
Standard Webhooks signature (webhook-id, webhook-timestamp, webhook-signature "v1,<base64>"
HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed with the secret of GET /v1/webhook) and that the
body is the task exactly as GET /v1/task/{id} returns it. Also: retries with backoff (a receiver
failing three times gets the fourth attempt), a process killed mid-delivery delivers after
restart, a tampered body fails verification, private addresses are refused unless allowed, and
delivery with separate API and worker processes on PostgreSQL.
"""

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from smoothd_support import (
    _free_port,
    close_client,
    llm_env,
    make_client,
    scripted_model,
    serve,
    Server,
    wait_final,
)

pytestmark = [pytest.mark.timeout(240)]

RESULT_TIMEOUT = 120
DELIVERY_TIMEOUT = 60
WEBHOOK_ENV = {
    "SMOOTHD_WEBHOOK_ALLOW_PRIVATE": "true",
    "SMOOTHD_WEBHOOK_RETRY_BASE_MS": "200",
    "SMOOTHD_WEBHOOK_TIMEOUT_SECONDS": "2",
}


class Receiver:
    """An HTTP receiver on 127.0.0.1 recording every POST. It answers 500 to the first
    `fail_first` requests, and holds (never answers) the requests while `hold` is set."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.lock:
                    outer.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                    n = len(outer.requests)
                if outer.hold.is_set():
                    outer.release.wait(60)
                    return
                code = 500 if n <= outer.fail_first else 200
                self.send_response(code)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = DELIVERY_TIMEOUT) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"receiver got {len(self.requests)} requests, wanted {n}")

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """Standard Webhooks verification, as a receiver would write it."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    sigs = [s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")]
    return any(hmac.compare_digest(want, s) for s in sigs)


def unsign(task: dict, origin: bool = True) -> dict:
    """The task with the expiry and signature of its artifact links removed: they are
    signed at each read, so two reads a second apart differ there and nowhere else. With
    `origin=False` the links' origin goes too (a cluster test gives each process its own
    `public_url`, where a deployment gives them all the one clients use)."""
    out = dict(task)
    for k in ("recording_url", "downloads_url"):
        if out.get(k):
            out[k] = re.sub(r"\?expires=\d+&signature=[0-9a-f]+$", "", out[k])
            if not origin:
                out[k] = re.sub(r"^https?://[^/]+", "", out[k])
    return out


@pytest.fixture(scope="module")
def llm():
    yield from scripted_model()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, llm):
    yield from serve(request.param, {**llm_env(llm.base_url), **WEBHOOK_ENV})


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def secret_of(server, key: str = "default") -> str:
    r = server.request("GET", "/v1/webhook", key=key)
    assert r.status_code == 200, r.text
    secret = r.json()["r"]["secret"]
    assert secret.startswith("whsec_")
    return secret


def deliveries(server, tid: str) -> list[dict]:
    r = server.request("GET", f"/v1/task/{tid}/webhooks")
    assert r.status_code == 200, r.text
    return r.json()["r"]


def wait_delivered(server, tid: str, timeout: float = DELIVERY_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = deliveries(server, tid)
        if last and last[0]["status"] == "delivered":
            return last[0]
        time.sleep(0.1)
    raise AssertionError(f"{tid}: not delivered: {last}")


def test_sdk_task_posts_signed_final_task_json(server, llm, site, receiver, browser):
    marker = llm.script(
        "hook",
        [[{"op": "goto", "url": site.url("/index.html")}], [{"op": "done", "output": "hooked"}]],
    )
    client = make_client(server.base + "/", server.key)
    try:
        handle = client.run(f"Say hooked {marker}", experimental_features={"webhook_url": receiver.url})
        res = handle.result(timeout=RESULT_TIMEOUT)
    finally:
        close_client(client)
    assert res.status == "done", res
    tid = handle.id()
    [req] = receiver.wait(1)
    secret = secret_of(server)
    assert verify(secret, req["headers"], req["body"]), req["headers"]
    # A tampered body (or another key's secret) fails verification.
    assert not verify(secret, req["headers"], req["body"].replace(b"hooked", b"hacked"))
    assert not verify(secret, req["headers"], req["body"] + b" ")
    assert not verify(secret_of(server, key=server.other_key), req["headers"], req["body"])
    assert req["headers"]["content-type"] == "application/json"
    assert req["headers"]["webhook-id"].startswith("msg_")
    assert abs(int(req["headers"]["webhook-timestamp"]) - time.time()) < 300
    sent = json.loads(req["body"])
    got = server.request("GET", f"/v1/task/{tid}")
    assert got.status_code == 200
    assert sent["r"]["status"] == "done" and sent["r"]["output"] == "hooked"
    assert unsign(sent["r"]) == unsign(got.json()["r"])
    d = wait_delivered(server, tid)
    assert d["id"] == req["headers"]["webhook-id"] and d["url"] == receiver.url
    [a] = d["attempts"]
    assert a["attempt"] == 1 and a["status_code"] == 200 and a["error"] is None and a["latency_ms"] >= 0
    time.sleep(1)
    assert len(receiver.requests) == 1, "delivered more than once"


def test_receiver_failing_three_times_gets_the_fourth_attempt(server, browser):
    rec = Receiver(fail_first=3)
    try:
        # A session closed at once: final (cancelled) without a model.
        r = server.request("POST", "/v1/task", json={"task": None, "experimental_features": {"webhook_url": rec.url}})
        assert r.status_code == 200, r.text
        tid = r.json()["r"]["id"]
        assert server.request("DELETE", f"/v1/task/{tid}").status_code == 200
        wait_final(server, tid, timeout=60)
        reqs = rec.wait(4)
        secret = secret_of(server)
        assert all(verify(secret, q["headers"], q["body"]) for q in reqs)
        assert len({q["headers"]["webhook-id"] for q in reqs}) == 1, "the event id changed between attempts"
        assert len({q["body"] for q in reqs}) == 1, "the body changed between attempts"
        d = wait_delivered(server, tid)
        assert [a["status_code"] for a in d["attempts"]] == [500, 500, 500, 200]
        assert all(a["error"] for a in d["attempts"][:3]) and d["attempts"][3]["error"] is None
        starts = [a["started_at_ms"] for a in d["attempts"]]
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        # Backoff base 200 ms, doubled: each wait is at least the scheduled delay.
        assert all(g >= 200 * 2**i for i, g in enumerate(gaps)), gaps
        time.sleep(1)
        assert len(rec.requests) == 4
    finally:
        rec.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_killed_mid_delivery_delivers_after_restart(backend, browser):
    rec = Receiver()
    rec.hold.set()
    srv = Server(backend, extra_env=WEBHOOK_ENV)
    try:
        srv.start(create_other_key=False)
        r = srv.request("POST", "/v1/task", json={"task": None, "experimental_features": {"webhook_url": rec.url}})
        assert r.status_code == 200, r.text
        tid = r.json()["r"]["id"]
        assert srv.request("DELETE", f"/v1/task/{tid}").status_code == 200
        [first] = rec.wait(1)
        # The task is final and its delivery in flight: kill the process before it is answered.
        srv.kill()
        rec.hold.clear()
        rec.release.set()
        srv.port = _free_port()
        srv.base = f"http://127.0.0.1:{srv.port}"
        srv.start(create_other_key=False)
        reqs = rec.wait(2)
        assert reqs[1]["headers"]["webhook-id"] == first["headers"]["webhook-id"]
        assert reqs[1]["body"] == first["body"]
        assert verify(secret_of(srv), reqs[1]["headers"], reqs[1]["body"])
        d = wait_delivered(srv, tid)
        assert d["attempts"][-1]["status_code"] == 200
        assert json.loads(reqs[1]["body"])["r"]["status"] == "cancelled"
    finally:
        srv.cleanup()
        rec.close()


def test_private_addresses_refused_unless_allowed():
    srv = Server("sqlite")
    try:
        srv.start(create_other_key=False)
        before = srv.request("GET", "/v1/task").json()["r"]
        for url, why in [
            ("http://127.0.0.1:9/hook", "https://"),
            ("https://127.0.0.1/hook", "private"),
            ("https://10.0.0.7/hook", "private"),
            ("https://[::1]/hook", "private"),
            ("https://localhost/hook", "private"),
            ("not a url", "not a URL"),
        ]:
            r = srv.request("POST", "/v1/task", json={"task": "x", "experimental_features": {"webhook_url": url}})
            assert r.status_code == 422, (url, r.status_code, r.text)
            assert r.json()["detail"].startswith("experimental_features.webhook_url:"), r.text
            assert why in r.json()["detail"], r.text
        r = srv.request("POST", "/v1/task", json={"task": "x", "experimental_features": {"webhook_url": 5}})
        assert r.status_code == 422 and "experimental_features.webhook_url" in r.json()["detail"]
        assert srv.request("GET", "/v1/task").json()["r"] == before, "a refused submit stored a task"
        r = srv.request("PUT", "/v1/webhook", json={"url": "https://192.168.1.1/x"})
        assert r.status_code == 422 and r.json()["detail"].startswith("url:"), r.text
        assert srv.request("GET", "/v1/webhook").json()["r"]["url"] is None
        r = srv.request("PUT", "/v1/webhook", json={"url": "https://hooks.example.com/smoothd"})
        assert r.status_code == 200 and r.json()["r"]["url"] == "https://hooks.example.com/smoothd"
        r = srv.request("PUT", "/v1/webhook", json={"url": None})
        assert r.status_code == 200 and r.json()["r"]["url"] is None
        assert srv.request("GET", "/v1/webhook", key="wrong").status_code == 401
    finally:
        srv.cleanup()


def test_key_default_url_and_separate_api_and_worker_processes(tmp_path, llm, site):
    """PostgreSQL with `serve --no-workers` and `worker` processes: the key's default URL (set
    with PUT /v1/webhook) applies to a task that names none, and exactly one delivery arrives."""
    from test_scale_out import Cluster

    cluster = Cluster(tmp_path)
    base_env = cluster.env
    cluster.env = lambda: {**base_env(), **llm_env(llm.base_url), **WEBHOOK_ENV}
    rec = Receiver()
    try:
        api = cluster.start("api", "api1")
        cluster.start("worker", "worker1")
        cluster.start("worker", "worker2")
        r = cluster.request(api, "PUT", "/v1/webhook", json={"url": rec.url})
        assert r.status_code == 200, r.text
        secret = r.json()["r"]["secret"]
        marker = llm.script("hook-cluster", [[{"op": "done", "output": "clustered"}]])
        client = make_client(api.base + "/", cluster.key)
        try:
            handle = client.run(f"Say clustered {marker}")
            res = handle.result(timeout=RESULT_TIMEOUT)
        finally:
            close_client(client)
        assert res.status == "done", res
        [req] = rec.wait(1)
        assert verify(secret, req["headers"], req["body"])
        sent = json.loads(req["body"])["r"]
        got = cluster.request(api, "GET", f"/v1/task/{handle.id()}").json()["r"]
        assert unsign(sent, origin=False) == unsign(got, origin=False)
        time.sleep(1.5)
        assert len(rec.requests) == 1, "delivered more than once"
        rows = cluster.sql(f"SELECT status, attempts FROM webhook_deliveries WHERE task_id = '{handle.id()}'")
        assert rows == [["delivered", "1"]], rows
    finally:
        rec.close()
        cluster.close()


def test_webhook_steps_posts_each_step_then_the_final_task(server, llm, site, receiver, browser):
    marker = llm.script(
        "hook-steps",
        [
            [{"op": "goto", "url": site.url("/index.html")}],
            [{"op": "goto", "url": site.url("/second.html")}],
            [{"op": "done", "output": "stepped"}],
        ],
    )
    r = server.request(
        "POST",
        "/v1/task",
        json={
            "task": f"Step along {marker}",
            "experimental_features": {"webhook_url": receiver.url, "webhook_steps": True},
        },
    )
    assert r.status_code == 200, r.text
    tid = r.json()["r"]["id"]
    wait_final(server, tid, timeout=RESULT_TIMEOUT)
    steps = server.request("GET", f"/v1/task/{tid}/steps").json()["r"]
    reqs = receiver.wait(len(steps) + 1)
    secret = secret_of(server)
    assert all(verify(secret, q["headers"], q["body"]) for q in reqs)
    kinds = sorted((q["headers"]["smoothd-event"], q["headers"]["smoothd-step"]) for q in reqs)
    assert kinds == sorted([("task.final", "")] + [("task.step", str(i + 1)) for i in range(len(steps))]), kinds
    assert len({q["headers"]["webhook-id"] for q in reqs}) == len(reqs)
    final = [q for q in reqs if q["headers"]["smoothd-event"] == "task.final"][0]
    assert json.loads(final["body"])["r"]["output"] == "stepped"
    listed = deliveries(server, tid)
    assert sorted((d["kind"], d["step"]) for d in listed) == sorted(
        [("final", None)] + [("step", i + 1) for i in range(len(steps))]
    )
    r = server.request(
        "POST", "/v1/task", json={"task": "x", "experimental_features": {"webhook_url": receiver.url, "webhook_steps": "yes"}}
    )
    assert r.status_code == 422 and "experimental_features.webhook_steps" in r.json()["detail"], r.text
