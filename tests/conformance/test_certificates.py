"""Client certificates (`certificates=[{file, password}]`), through the real SDK session API:
a local HTTPS server that requires a client certificate (CA, server and client certificates
made with `openssl` here) admits the session that carries the right .p12 and refuses the one
without it; the certificate stays in its own task's browser and is gone with it; a .p12 that
cannot be opened fails the task naming the field.

Its own smoothd (on SQLite: certificates do not touch the database), whose Chromium ignores
server certificate errors: the test server's certificate is self-signed, and what is tested is
the client's certificate.
"""

import base64
import http.server
import json
import os
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from smooth import ToolCallError
from smoothd_support import Server, chromium_browser_pids, close_client, make_client, wait_final

pytestmark = pytest.mark.usefixtures("browser")

PASSWORD = "p12-secret"


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate (CN=alice) as .p12."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=smoothd test CA", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "srv.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "alice.key", "-out", "alice.csr",
             "-subj", "/CN=alice", cwd=d)
    _openssl("x509", "-req", "-in", "alice.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "alice.crt", "-days", "2", cwd=d)
    _openssl("pkcs12", "-export", "-inkey", "alice.key", "-in", "alice.crt", "-out", "alice.p12",
             "-passout", f"pass:{PASSWORD}", cwd=d)
    _openssl("pkcs12", "-export", "-inkey", "alice.key", "-in", "alice.crt", "-out", "alice-nopass.p12",
             "-passout", "pass:", cwd=d)
    return d


class MutualTlsSite:
    """HTTPS on 127.0.0.1 that completes the handshake only with a client certificate the test
    CA signed, and greets the certificate's common name."""

    def __init__(self, pki: Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / "srv.crt", pki / "srv.key")
        ctx.load_verify_locations(pki / "ca.crt")
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.admitted: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                cert = self.connection.getpeercert() or {}
                cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), "")
                site.admitted.append(cn)
                body = f"<html><head><title>mtls</title></head><body>hello {cn}</body></html>".encode()
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = self.socket.accept()
                return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):
                pass  # refused handshakes are the point

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def mtls(pki):
    s = MutualTlsSite(pki)
    yield s
    s.close()


@pytest.fixture(scope="module")
def cert_server():
    srv = Server(
        "sqlite",
        extra_env={
            "SMOOTHD_CHROMIUM_ARGS": json.dumps(
                [
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                    "--ignore-certificate-errors",
                ]
            )
        },
    )
    try:
        srv.start()
        yield srv
        assert srv.stop() == 0, srv.stderr_tail()
    finally:
        srv.cleanup()


@pytest.fixture
def client(cert_server):
    c = make_client(cert_server.base + "/", cert_server.key)
    yield c
    close_client(c)


def _homes(server: Server) -> dict[int, str]:
    """HOME of each browser process this smoothd runs."""
    out = {}
    for pid in chromium_browser_pids(server.proc.pid):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for e in env:
            if e.startswith(b"HOME="):
                out[pid] = e[5:].decode()
    return out


def test_the_right_certificate_is_presented_and_no_certificate_is_refused(cert_server, client, mtls, pki):
    p12 = (pki / "alice.p12").read_bytes()
    before = set(_homes(cert_server))
    with_cert = client.session(certificates=[{"file": base64.b64encode(p12).decode(), "password": PASSWORD}])
    try:
        with_cert.goto(mtls.url)
        assert with_cert.evaluate_js("document.body.innerText").output == "hello alice"
        assert set(mtls.admitted) == {"alice"}, mtls.admitted
        admitted = len(mtls.admitted)
        # The certificate lives in the NSS database of that session's own browser only.
        homes = {pid: h for pid, h in _homes(cert_server).items() if pid not in before}
        assert len(homes) == 1, homes
        (home,) = homes.values()
        assert (Path(home) / ".pki" / "nssdb" / "cert9.db").is_file(), home
        listed = subprocess.run(
            ["certutil", "-L", "-d", f"sql:{home}/.pki/nssdb"], capture_output=True, text=True, timeout=30
        )
        assert "alice" in listed.stdout, listed.stdout + listed.stderr

        # A session without certificates, open at the same time, is refused by the site.
        without = client.session()
        try:
            with pytest.raises(ToolCallError):
                without.goto(mtls.url)
            assert len(mtls.admitted) == admitted, "a session without the certificate got in"
            for pid, h in _homes(cert_server).items():
                if h != home:
                    db = Path(h) / ".pki" / "nssdb"
                    assert not db.exists() or "alice" not in subprocess.run(
                        ["certutil", "-L", "-d", f"sql:{db}"], capture_output=True, text=True, timeout=30
                    ).stdout, f"the certificate leaked into browser {pid}"
        finally:
            without.close(force=True)
    finally:
        with_cert.close(force=True)
    # The certificate database went with the task's browser.
    deadline = time.monotonic() + 20
    while Path(home).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(home).exists(), f"{home} outlived its task"


def test_a_certificate_that_cannot_be_opened_fails_the_task_naming_it(cert_server, pki):
    p12 = base64.b64encode((pki / "alice.p12").read_bytes()).decode()
    r = cert_server.request(
        "POST", "/v1/task", json={"task": None, "certificates": [{"file": p12, "password": "wrong"}]}
    )
    assert r.status_code == 200, r.text
    tid = r.json()["r"]["id"]
    final = wait_final(cert_server, tid, timeout=60)
    assert final["status"] == "failed", final
    assert "certificates[0]" in final["error"], final


def test_a_certificate_without_a_password_and_sent_as_a_file_object(client, mtls, pki):
    """The SDK also takes an open file and base64-encodes it; a .p12 without a password works."""
    before = len(mtls.admitted)
    with open(pki / "alice-nopass.p12", "rb") as f:
        s = client.session(certificates=[{"file": f}])
    try:
        s.goto(mtls.url)
        assert s.evaluate_js("document.body.innerText").output == "hello alice"
        assert len(mtls.admitted) > before
    finally:
        s.close(force=True)
