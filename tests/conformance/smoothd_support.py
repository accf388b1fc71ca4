"""Support of the conformance suite: a real `smoothd serve` process per database backend,
driven through the real `smooth-py` SDK (the wire contract) and, where the SDK would refuse
to send an input, through raw HTTP.

Environment:
  SMOOTHD_BIN                 the smoothd binary (default: <repo>/target/debug/smoothd)
  SMOOTHD_TEST_POSTGRES_URL   PostgreSQL admin URL; a fresh database is created from it
                              (default: postgres://postgres@127.0.0.1:5432/postgres)
"""

import io
import json
import os

# Must be set before `smooth` is imported: the SDK reads it at import time.
os.environ["SMOOTH_TELEMETRY"] = "off"
os.environ.pop("SMOOTH_BASE_URL", None)
os.environ.pop("CIRCLEMIND_API_KEY", None)

import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

import pytest  # noqa: E402
import requests  # noqa: E402

from smooth import SmoothClient  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
READY_TIMEOUT = 60
STOP_TIMEOUT = 15


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no output>"
    return "\n".join(lines[-n:]) or "<no output>"


def _smoothd_bin() -> str:
    b = os.environ.get("SMOOTHD_BIN") or str(REPO / "target" / "debug" / "smoothd")
    if not Path(b).is_file():
        pytest.exit(f"smoothd binary not found at {b}; run `cargo build -p smoothd` or set SMOOTHD_BIN", 2)
    return b


class PostgresDb:
    """A fresh PostgreSQL database created with psql from the admin URL, dropped by close()."""

    def __init__(self) -> None:
        self.admin = os.environ.get("SMOOTHD_TEST_POSTGRES_URL") or DEFAULT_PG_ADMIN
        if shutil.which("psql") is None:
            pytest.fail("psql is needed for the PostgreSQL backend (Debian: apt-get install postgresql-client)")
        self.name = f"smoothd_conf_{secrets.token_hex(6)}"
        self._psql(f"CREATE DATABASE {self.name}")
        parts = urlsplit(self.admin)
        self.url = urlunsplit((parts.scheme, parts.netloc, "/" + self.name, parts.query, parts.fragment))

    def _psql(self, sql: str) -> None:
        r = subprocess.run(
            ["psql", "-w", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.admin, "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        if r.returncode != 0:
            pytest.fail(f"psql {sql!r} against {self.admin} failed: {r.stderr.strip()}")

    def close(self) -> None:
        self._psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class Server:
    """One `smoothd serve` process with its own data folder, database, port and keys."""

    def __init__(self, backend: str, extra_env: dict[str, str] | None = None) -> None:
        self.backend = backend
        self.extra_env = extra_env or {}
        self.bin = _smoothd_bin()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"smoothd-conf-{backend}-"))
        self.data_dir = self.tmp / "data"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.key = "smd_test_" + secrets.token_hex(20)
        self.pg: PostgresDb | None = None
        if backend == "postgres":
            self.pg = PostgresDb()
            self.db_url = self.pg.url
        else:
            self.db_url = f"sqlite://{self.tmp / 'smoothd.db'}"
        self.stderr_path = self.tmp / "smoothd.stderr"
        self.stdout_path = self.tmp / "smoothd.stdout"
        self.proc: subprocess.Popen[bytes] | None = None
        self.other_key = ""
        # Small upload limit so the 413 test stays cheap.
        self.max_upload = 1024 * 1024

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMOOTHD_") and k != "RUST_LOG"}
        env.update(
            SMOOTHD_LISTEN=f"127.0.0.1:{self.port}",
            SMOOTHD_PUBLIC_URL=self.base,
            SMOOTHD_DATA_DIR=str(self.data_dir),
            SMOOTHD_DATABASE_URL=self.db_url,
            SMOOTHD_API_KEY=self.key,
            SMOOTHD_WORKERS="2",
            SMOOTHD_MAX_UPLOAD_BYTES=str(self.max_upload),
            SMOOTHD_LOG=os.environ.get("SMOOTHD_TEST_LOG", "info"),
            # Tests talk to 127.0.0.1 only: keep Chromium off the network.
            SMOOTHD_CHROMIUM_ARGS='["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]',
        )
        if os.environ.get("SMOOTHD_CHROMIUM"):
            env["SMOOTHD_CHROMIUM"] = os.environ["SMOOTHD_CHROMIUM"]
        env.update(self.extra_env)
        return env

    def start(self, create_other_key: bool = True) -> None:
        self.proc = subprocess.Popen(
            [self.bin, "serve"],
            cwd=self.tmp,  # no config/smoothd.toml here: env only
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=open(self.stdout_path, "wb"),
            stderr=open(self.stderr_path, "wb"),
        )
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(
                    f"smoothd ({self.backend}) exited with {rc} before it was ready; stderr:\n{_tail(self.stderr_path)}"
                )
            try:
                r = requests.get(f"{self.base}/readyz", timeout=2)
                if r.status_code == 200:
                    break
                last = f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                last = str(e)
            time.sleep(0.2)
        else:
            self.kill()
            pytest.fail(
                f"smoothd ({self.backend}) not ready within {READY_TIMEOUT}s (last: {last}); stderr:\n"
                f"{_tail(self.stderr_path)}"
            )
        if create_other_key:
            self.other_key = self.create_key("other")

    def restart(self) -> None:
        """Stops (SIGTERM, must exit 0) and starts again on the same database and data folder."""
        rc = self.stop()
        assert rc == 0, f"smoothd ({self.backend}) exit code {rc} after SIGTERM; stderr:\n{self.stderr_tail()}"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.start(create_other_key=False)

    def create_key(self, name: str) -> str:
        r = subprocess.run(
            [self.bin, "keys", "create", "--name", name],
            cwd=self.tmp,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, f"`smoothd keys create --name {name}` failed ({r.returncode}): {r.stderr}"
        lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
        assert lines, f"`smoothd keys create` printed no key; stderr: {r.stderr}"
        return lines[-1]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM; returns the exit code, or None if it did not exit within STOP_TIMEOUT."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def cleanup(self) -> None:
        self.kill()
        if self.pg is not None:
            self.pg.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- raw HTTP ---

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, key: str | None = "default", **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if key == "default":
            key = self.key
        if key is not None:
            headers["apikey"] = key
        kw.setdefault("timeout", 30)
        return requests.request(method, self.url(path), headers=headers, **kw)

    def stderr_tail(self) -> str:
        return _tail(self.stderr_path)


LLM_MODEL = "scripted"
# USD per million tokens of the scripted model, as SMOOTHD_LLM_PRICES carries them.
LLM_PRICE_IN, LLM_PRICE_OUT = 10.0, 30.0


def llm_env(base_url: str, **overrides: str) -> dict[str, str]:
    """The environment that points smoothd's agent at a (scripted) OpenAI-compatible model:
    short timeouts and fast retries so the failure tests stay quick, a price table, no vision."""
    env = {
        "SMOOTHD_LLM_BASE_URL": base_url,
        "SMOOTHD_LLM_API_KEY": "scripted-key",
        "SMOOTHD_LLM_MODEL": LLM_MODEL,
        "SMOOTHD_LLM_TIMEOUT_SECONDS": "3",
        "SMOOTHD_LLM_MAX_RETRIES": "3",
        "SMOOTHD_LLM_RETRY_BASE_MS": "100",
        "SMOOTHD_LLM_VISION": "off",
        "SMOOTHD_LLM_PRICES": f"{{{LLM_MODEL}={{input={LLM_PRICE_IN},output={LLM_PRICE_OUT}}}}}",
        "SMOOTHD_CUSTOM_TOOL_TIMEOUT_SECONDS": "60",
    }
    env.update(overrides)
    return env


def close_client(c: SmoothClient) -> None:
    try:
        c._run_async(c._async_client.close())
    finally:
        c._loop.call_soon_threadsafe(c._loop.stop)
        c._loop_thread.join(5)


# The flags every Chromium a test starts by itself needs here (the brief's list): without them its
# background connections fail on this network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def serve(backend: str, extra_env: dict | None = None, **start_kw):
    """A started smoothd for a fixture to `yield from`: after the tests it is stopped with SIGTERM
    and must exit 0 within STOP_TIMEOUT; its data is removed either way."""
    srv = Server(backend, extra_env=extra_env)
    try:
        srv.start(**start_kw)
        yield srv
        rc = srv.stop()
        assert rc is not None, (
            f"smoothd ({srv.backend}) did not exit within {STOP_TIMEOUT}s of SIGTERM; stderr:\n{srv.stderr_tail()}"
        )
        assert rc == 0, f"smoothd ({srv.backend}) exited with {rc} after SIGTERM; stderr:\n{srv.stderr_tail()}"
    finally:
        srv.cleanup()


def scripted_model():
    """A scripted OpenAI-compatible model on loopback for a fixture to `yield from`."""
    from scripted_llm import ScriptedLLM

    s = ScriptedLLM()
    yield s
    s.close()


def playwright_chromium():
    """The system Chromium under Playwright (headless, CHROMIUM_FLAGS), for a fixture to
    `yield from`; skips without Chromium, and fails under CI=true."""
    import pytest
    from playwright.sync_api import sync_playwright

    exe = "/usr/lib/chromium/chromium" if os.path.exists("/usr/lib/chromium/chromium") else chromium_path()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium not found (CI=true)")
        pytest.skip("Chromium not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def make_client(base_url: str, key: str) -> SmoothClient:
    return SmoothClient(api_key=key, base_url=base_url, timeout=30)


def get_task(server, tid: str, key: str = "default", **params) -> requests.Response:
    return server.request("GET", f"/v1/task/{tid}", key=key, params=params or None)


def download_names(server, tid: str, key: str = "default") -> list[str]:
    """The file names in a final task's downloads archive (its `downloads_url`)."""
    r = get_task(server, tid, key=key, downloads="true")
    url = r.json()["r"]["downloads_url"]
    assert url, f"no downloads archive: {r.text}"
    archive = requests.get(url, headers={"apikey": server.key}, timeout=30)
    assert archive.status_code == 200, archive.status_code
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        return z.namelist()


def wait_status(server, tid: str, statuses, timeout: float = 30, key: str = "default") -> dict:
    """Polls (event_t=0, never held) until the task has one of `statuses`."""
    statuses = {statuses} if isinstance(statuses, str) else set(statuses)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = get_task(server, tid, key=key)
        assert r.status_code in (200, 202), f"GET /v1/task/{tid} -> {r.status_code} {r.text}"
        last = r.json()["r"]
        if last["status"] in statuses:
            return last
        time.sleep(0.1)
    raise AssertionError(f"task {tid} not in {sorted(statuses)} within {timeout}s; last: {last}")


def wait_final(server, tid: str, timeout: float = 30, check: bool = True, key: str = "default") -> dict | None:
    try:
        return wait_status(server, tid, ("done", "failed", "cancelled"), timeout, key=key)
    except AssertionError:
        if check:
            raise
        return None


def task_ids_page(server, key: str = "default") -> list[str]:
    r = server.request("GET", "/v1/task", key=key, params={"l": 128})
    assert r.status_code == 200, f"GET /v1/task -> {r.status_code} {r.text}"
    return [t["id"] for t in r.json()["r"]]


def detail(r: requests.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {r.status_code} {r.text!r}") from None
    assert isinstance(body, dict) and isinstance(body.get("detail"), str), f"no string `detail`: {body}"
    return body["detail"]


def extension_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "manifest.json",
            '{"manifest_version": 3, "name": "conformance", "version": "1.0", "description": "test"}',
        )
        z.writestr("background.js", "console.log('hi');\n")
    return buf.getvalue()


def named(data: bytes, name: str) -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = name
    return f


# --- Chromium and a local site for the browser ---

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The Chromium smoothd will find (it looks at SMOOTHD_CHROMIUM, then PATH)."""
    configured = os.environ.get("SMOOTHD_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    for name in CHROMIUM_NAMES:
        p = shutil.which(name)
        if p:
            return p
    return None


SITE_PAGES = {
    "/index.html": (
        "<!doctype html><html><head><title>Conformance home</title></head>"
        "<body><h1>Hello from the conformance site</h1><a href='/second.html'>next</a></body></html>"
    ),
    "/second.html": "<!doctype html><html><head><title>Second page</title></head><body><p>two</p></body></html>",
    # For the device tests: a page that opts into the device width, as mobile sites do.
    "/probe.html": (
        "<!doctype html><html><head><title>Probe</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'></head>"
        "<body><p id='p'>probe page</p></body></html>"
    ),
    # For use_adblock: EasyList's generic `/ads-async.$script` rule matches the first script,
    # EasyPrivacy matches the second; app.js is the control every browser loads.
    "/adblock.html": (
        "<!doctype html><html><head><title>Ad block probe</title>"
        "<script src='/ads-async.js'></script>"
        "<script src='/analytics.bundled.js'></script>"
        "<script src='/app.js'></script>"
        "</head><body><p>content</p></body></html>"
    ),
    "/ads-async.js": "window.adLoaded = true;\n",
    "/analytics.bundled.js": "window.trackerLoaded = true;\n",
    "/app.js": "window.appLoaded = true;\n",
    # For the live view and downloads: four colored quadrants, a record of the clicks the page
    # received, and a link that downloads report.csv under another name.
    "/media.html": (
        "<!doctype html><html><head><title>Media</title><style>body{margin:0}"
        ".q{position:fixed;width:50vw;height:50vh}#dl{position:fixed;left:45vw;top:48vh;background:#fff}</style>"
        "</head><body>"
        "<div class='q' style='left:0;top:0;background:rgb(220,30,30)'></div>"
        "<div class='q' style='left:50vw;top:0;background:rgb(30,200,30)'></div>"
        "<div class='q' style='left:0;top:50vh;background:rgb(30,30,220)'></div>"
        "<div class='q' style='left:50vw;top:50vh;background:rgb(240,240,20)'></div>"
        "<a id='dl' href='/report.csv' download='quarterly report.csv'>download</a>"
        "<script>window.clicks=[];document.addEventListener('click',e=>window.clicks.push([e.clientX,e.clientY]));"
        "</script></body></html>"
    ),
    "/report.csv": "quarter,revenue\nQ1,1200\nQ2,1350\nQ3,990\n",
    "/upload.html": (
        "<!doctype html><html><head><title>Upload</title></head>"
        "<body><form><input type='file' id='f' name='f'></form></body></html>"
    ),
}

SITE_TYPES = {".js": "application/javascript", ".html": "text/html; charset=utf-8", ".csv": "text/csv"}
FIXTURE_SITE = REPO / "tests" / "fixtures" / "site"


def fixture_file(path: str) -> bytes | None:
    """The bytes of a file under tests/fixtures/site for a URL path, or None (never outside it)."""
    f = (FIXTURE_SITE / path.lstrip("/")).resolve()
    if not f.is_relative_to(FIXTURE_SITE.resolve()) or not f.is_file():
        return None
    return f.read_bytes()


class Site:
    """A tiny HTTP server on 127.0.0.1 serving SITE_PAGES, then the files of tests/fixtures/site
    (e.g. /agent/form.html), so no test needs the internet."""

    def __init__(self, host: str = "127.0.0.1", url_host: str | None = None) -> None:
        """`host` is the address to bind; `url_host` the name its URLs use (default `host`)."""
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path.split("?", 1)[0] == "/echo-headers":
                    # The bot detector (detector/index.html) compares request headers with navigator.
                    echo = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("access-control-allow-origin", "*")
                    self.send_header("content-length", str(len(echo)))
                    self.end_headers()
                    self.wfile.write(echo)
                    return
                body = SITE_PAGES.get(self.path.split("?", 1)[0])
                data = body.encode() if body is not None else fixture_file(self.path.split("?", 1)[0])
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                path = self.path.split("?", 1)[0]
                ctype = SITE_TYPES.get(path[path.rfind(".") :], "text/html; charset=utf-8")
                self.send_response(200)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://{url_host or host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class AuthProxy:
    """A small authenticating HTTP proxy on 127.0.0.1 for plain-http targets (absolute-form GET
    only). Without the right `Proxy-Authorization` it answers 407 with `Proxy-Authenticate`;
    with it, it forwards the request in origin form with `Connection: close` and relays the
    answer. `forwarded` lists the absolute URLs it forwarded, in order. `page_407`: the 407
    carries an HTML page saying so, as squid's and tinyproxy's do (a browser that gives up
    on the challenge shows that page)."""

    def __init__(self, user: str, password: str, page_407: bool = False) -> None:
        import base64
        import http.client
        import http.server
        import threading
        from urllib.parse import urlsplit as _split

        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.forwarded: list[str] = []
        self.refused = 0
        proxy = self
        hop = {"proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "upgrade"}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _close_with(self, code: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def do_GET(self):  # noqa: N802
                if (self.headers.get("Proxy-Authorization") or "").strip() != expected:
                    proxy.refused += 1
                    page = b""
                    headers = {"Proxy-Authenticate": 'Basic realm="t"'}
                    if page_407:
                        page = b"<html><body><h1>407 Proxy Authentication Required</h1></body></html>"
                        headers["Content-Type"] = "text/html"
                    self._close_with(407, headers, page)
                    return
                target = _split(self.path)
                if target.scheme != "http" or not target.hostname:
                    self._close_with(400, {})
                    return
                proxy.forwarded.append(self.path)
                path = (target.path or "/") + (f"?{target.query}" if target.query else "")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                headers["Connection"] = "close"
                try:
                    conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                    conn.close()
                except OSError:
                    self._close_with(502, {})
                    return
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in hop | {"content-length", "transfer-encoding"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def do_CONNECT(self):  # noqa: N802
                self._close_with(405, {})

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _proc_ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces or parentheses: parse after the last ')'.
    rest = stat.rsplit(")", 1)[-1].split()
    try:
        return int(rest[1])
    except (IndexError, ValueError):
        return None


def chromium_browser_pids(parent_pid: int) -> list[int]:
    """Chromium browser processes (not renderers or helpers, which carry `--type=`) whose
    parent is `parent_pid`: the browsers a smoothd started."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if _proc_ppid(pid) != parent_pid:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in cmd if a]
        if not args or any(a.startswith("--type=") for a in args):
            continue
        if "chrom" in Path(args[0]).name.lower():
            out.append(pid)
    return out


# --- a second, independent Chromium: the person looking at the live view ---


class Viewer:
    """A headless Chromium of its own, driven over CDP (websockets), that opens pages the way
    a person's browser would, so the live view is tested as its users see it."""

    def __init__(self) -> None:
        import json
        import threading

        from websockets.sync.client import connect

        self._json = json
        self.tmp = tempfile.mkdtemp(prefix="smoothd-viewer-")
        chromium = chromium_path()
        assert chromium, "Chromium is needed for the viewer"
        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.tmp}",
                "--window-size=1400,1000",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ws_url = None
        deadline = time.monotonic() + 30
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            if "DevTools listening on " in line:
                ws_url = line.split("DevTools listening on ", 1)[1].strip()
                break
        assert ws_url, "the viewer Chromium did not start"
        # Keep draining stderr so Chromium never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.next_id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(self._json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            m = self._json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if m.get("id") == self.next_id:
                assert "error" not in m, f"{method}: {m['error']}"
                return m["result"]

    def open(self, url: str) -> str:
        """Opens `url` in a new tab; returns the tab's CDP session."""
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        return self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def eval(self, tab: str, expression: str):
        r = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, tab
        )
        assert "exceptionDetails" not in r, f"{expression}: {r['exceptionDetails']}"
        return r["result"].get("value")

    def wait(self, tab: str, expression: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.eval(tab, expression)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"viewer: {expression} stayed falsy for {timeout}s")

    def click(self, tab: str, x: float, y: float) -> None:
        """A real mouse click (CDP input) at (x, y) CSS pixels of the tab."""
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}, tab)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait(10)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def db_text(server, sql: str) -> str:
    """The rows `sql` selects from the server's database, as text (SQLite through sqlite3, PostgreSQL
    through psql), for tests that check what is stored."""
    if server.backend == "sqlite":
        import sqlite3

        con = sqlite3.connect(server.db_url.removeprefix("sqlite://"))
        try:
            return json.dumps(con.execute(sql).fetchall())
        finally:
            con.close()
    out = subprocess.run(["psql", server.db_url, "-At", "-c", sql], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout

