"""TOTP secrets through the real SDK and the scripted model: a session's run_task signs in to a
two-step page served here (user + password, then a 6-digit code) whose server checks the code
with this file's own RFC 6238 (hmac, not smoothd's code). The key and the otpauth URI must not
reach the model, the task's events, the step traces, the dashboard or smoothd's (debug) log; the
code must not reach the model either (the page echoes it: the view shows the placeholder).

The module runs its own smoothd per backend with debug logging, so the log check means something.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import struct
import threading
import time
import urllib.parse

import pytest
import requests
from smooth._exceptions import ApiError
from smooth.models import Secret

from scripted_llm import content_text, tool_results
from smoothd_support import db_text, get_task, llm_env, scripted_model, serve, wait_final, wait_status

PERIOD = 30


def rfc6238(key_b32: str, at: float, digits: int = 6) -> str:
    """The test's own TOTP (HMAC-SHA1, RFC 6238 / RFC 4226 dynamic truncation)."""
    key = base64.b32decode(key_b32 + "=" * (-len(key_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // PERIOD), hashlib.sha1).digest()
    offset = mac[-1] & 15
    n = (struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**digits
    return f"{n:0{digits}d}"


def test_the_test_totp_matches_rfc_6238():
    """Appendix B, SHA1, 8 digits: so the page's check below is a true RFC 6238 check."""
    key = base64.b32encode(b"12345678901234567890").decode()
    assert rfc6238(key, 59, 8) == "94287082"
    assert rfc6238(key, 1111111109, 8) == "07081804"
    assert rfc6238(key, 2000000000, 8) == "69279037"


class SignInSite:
    """/login (user + password) -> POST /2fa (the code form) -> POST /verify: "Signed in as ada"
    only when the code is the current one for `key` (no window: a code typed just before it
    expires would fail)."""

    def __init__(self, key_b32: str, password: str):
        self.key = key_b32
        self.password = password
        self.codes: list[tuple[str, bool]] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _page(self, body: str, code: int = 200):
                data = f"<!doctype html><html><body>{body}</body></html>".encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._page(
                    '<h1>Sign in</h1><form method="post" action="/2fa">'
                    '<label for="user">User</label><input id="user" name="user">'
                    '<label for="password">Password</label><input id="password" name="password" type="password">'
                    "<button>Continue</button></form>"
                )

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(n).decode()).items()}
                if self.path == "/2fa":
                    if form.get("user") != "ada" or form.get("password") != site.password:
                        return self._page("<p>Wrong user or password</p>", 401)
                    return self._page(
                        '<h1>Two-step verification</h1><form method="post" action="/verify">'
                        '<input type="hidden" name="user" value="ada">'
                        '<label for="code">Enter the 6-digit code from your app</label>'
                        '<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code">'
                        "<button>Verify</button></form>"
                    )
                code = form.get("code", "")
                ok = hmac.compare_digest(code, rfc6238(site.key, time.time()))
                site.codes.append((code, ok))
                if ok:
                    return self._page(f"<p>Code {code} accepted.</p><p>Signed in as ada</p>")
                return self._page(f"<p>Code {code} is wrong or expired.</p>", 401)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def llm():
    yield from scripted_model()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, llm):
    yield from serve(request.param, llm_env(llm.base_url, SMOOTHD_LOG="debug"))


@pytest.fixture(autouse=True)
def _needs_browser(browser):
    """Every test here drives Chromium."""


def open_session(client, server):
    s = client.session()
    wait_status(server, s.id(), "running", timeout=60)
    return s


def logs_of(server) -> str:
    return server.stderr_path.read_text(errors="replace") + server.stdout_path.read_text(errors="replace")


def dashboard_json(server, tid: str) -> str:
    """What the dashboard serves about the task (signed in with the key, as a browser would)."""
    web = requests.Session()
    r = web.post(server.base + "/dashboard/login", data={"key": server.key}, allow_redirects=False, timeout=10)
    assert r.status_code in (302, 303), r.text
    parts = [web.get(server.base + f"/dashboard/api/task/{tid}{p}", timeout=10) for p in ("", "/trace")]
    for p in parts:
        assert p.status_code == 200, p.text
    return "".join(p.text for p in parts)


@pytest.mark.parametrize("form", ["uri", "json"])
def test_a_totp_secret_signs_in_and_its_key_goes_nowhere(server, client, llm, form):
    key = base64.b32encode(os.urandom(20)).decode().rstrip("=")
    password = "pw-" + os.urandom(6).hex()
    uri = f"otpauth://totp/Local:ada?secret={key}&issuer=Local"
    value = uri if form == "uri" else json.dumps({"totp": key})
    site = SignInSite(key, password)
    marker = llm.script(
        f"totp-{form}",
        [
            # Not allowed on the first page: refused, and no code is typed.
            [{"op": "type", "target": {"id": "user"}, "text": "<secret>otp</secret>", "expect_error": True}],
            [
                {"op": "type", "target": {"id": "user"}, "text": "ada"},
                {"op": "type", "target": {"id": "password"}, "text": "<secret>pw</secret>"},
                {"op": "click", "target": {"text": "Continue"}},
            ],
            [
                {"op": "type", "target": {"id": "code"}, "text": "<secret>otp</secret>"},
                {"op": "click", "target": {"text": "Verify"}},
            ],
            [{"op": "done", "output_from": r"(Signed in as ada)"}],
        ],
    )
    s = open_session(client, server)
    try:
        done = s.run_task(
            f"Sign in as ada with the one-time code {marker}",
            url=site.base + "/login",
            max_steps=8,
            secrets={
                "pw": Secret(value=password, allowed_urls=[site.base + "/login"]),
                "otp": Secret(value=value, allowed_urls=[site.base + "/2fa"]),
            },
        )
        assert done.output == "Signed in as ada", done
        events = get_task(server, s.id(), event_t=0).text
        steps = server.request("GET", f"/v1/task/{s.id()}/steps")
        assert steps.status_code == 200, steps.text
        steps = steps.text
    finally:
        s.close(force=True)
        site.close()
    wait_final(server, s.id(), timeout=30)
    # The page's own RFC 6238 accepted the one code it got (typed once, on the allowed page).
    assert len(site.codes) == 1 and site.codes[0][1], site.codes
    code = site.codes[0][0]
    assert re.fullmatch(r"\d{6}", code), code

    reqs = llm.requests(marker)
    assert len(reqs) >= 4, len(reqs)
    task_msg = content_text(reqs[0]["messages"][1]["content"])
    assert "otp (one-time code" in task_msg and f"allowed on {site.base}/2fa" in task_msg, task_msg
    results = tool_results(reqs[-1])
    assert results[0].startswith("error") and "otp" in results[0] and "may not be typed" in results[0], results
    # The verify page echoes the code: the model reads the placeholder instead.
    last_view = content_text([m for m in reqs[-1]["messages"] if m.get("role") == "user"][-1]["content"])
    assert "Code <secret>otp</secret> accepted." in last_view, last_view

    whole_code = re.compile(rf"(?<!\d){code}(?!\d)")
    dashboard = dashboard_json(server, s.id())
    logs = logs_of(server)
    assert "DEBUG" in logs, "the server should log at debug level here"
    places = {"model requests": json.dumps(reqs), "events": events, "steps": steps, "dashboard": dashboard}
    for where, text in places.items():
        assert key not in text and key.lower() not in text, f"the TOTP key is in the {where}"
        assert "otpauth" not in text, f"the otpauth URI is in the {where}"
        assert password not in text, f"the password is in the {where}"
    for where in ("model requests", "steps"):
        assert not whole_code.search(places[where]), f"the one-time code is in the {where}"
    assert key not in logs and "otpauth://" not in logs and password not in logs, "a secret is in smoothd's log"
    # The stored run_task command keeps the secrets' names, not their values, once answered.
    stored = db_text(server, f"SELECT name, payload FROM task_events WHERE task_id = '{s.id()}' AND direction = 'in'")
    assert "run_task" in stored and "otp" in stored and stored.count("<redacted>") == 2, stored
    assert key not in stored and "otpauth" not in stored and password not in stored, "a secret is in the database"
    assert "<secret>otp</secret>" in steps


def test_a_malformed_otpauth_uri_is_refused_naming_the_field(server, client):
    bad_key = "not_base32!" + os.urandom(4).hex()
    s = open_session(client, server)
    try:
        for value, why in [
            (f"otpauth://totp/x?secret={bad_key}", "the secret is not base32"),
            ("otpauth://hotp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=1", "only otpauth://totp/"),
            ("otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=9", "digits must be 6, 7 or 8"),
        ]:
            with pytest.raises(ApiError) as e:
                s.run_task(
                    "[script:none] sign in",
                    url="http://127.0.0.1:9/",
                    secrets={"github_2fa": Secret(value=value, allowed_urls=["http://127.0.0.1:9/*"])},
                )
            assert e.value.status_code == 422, e.value
            detail = str(e.value.detail)
            assert detail.startswith("run_task: input.secrets.github_2fa: not a valid otpauth URI: "), detail
            assert why in detail and "GEZDGNBV" not in detail and bad_key not in detail, detail
        # The refused event was never stored: the session is untouched and still runs.
        assert get_task(server, s.id()).json()["r"]["status"] == "running"
    finally:
        s.close(force=True)
    assert bad_key not in logs_of(server)
