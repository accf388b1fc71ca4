"""Per-task browser options, driven through the real SDK session API against the local site:
devices, stealth, ad blocking, allowed URLs, proxies, the cursor overlay, profiles, extensions,
task files, the start page, the `smooth` CLI, and a Chromium that dies under a session.

The server runs two workers: every test closes its sessions before opening more than two.
"""

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from smooth import ApiError, ToolCallError
from smooth._interface import SessionHandle
from smooth.models import TaskEvent
from smoothd_support import AuthProxy, chromium_browser_pids, detail, wait_final, wait_status

# What a page can read about its browser.
PROBE = """({
  innerWidth: window.innerWidth,
  dpr: window.devicePixelRatio,
  ua: navigator.userAgent,
  webdriver: navigator.webdriver,
  chrome: typeof window.chrome,
  languages: navigator.languages,
  coarse: matchMedia('(pointer: coarse)').matches,
  touch: 'ontouchstart' in window,
  brands: navigator.userAgentData ? navigator.userAgentData.brands.map(b => b.brand) : null,
  uaMobile: navigator.userAgentData ? navigator.userAgentData.mobile : null,
})"""

CURSOR = """window.dispatchEvent(new MouseEvent('mousemove', {clientX: 120, clientY: 45}));
const c = document.getElementById('__smoothd_cursor');
return c && [c.style.left, c.style.top];"""

ADBLOCK_FLAGS = "({ad: !!window.adLoaded, tracker: !!window.trackerLoaded, app: !!window.appLoaded})"


def opened(client, cleanup_tasks, **options):
    s = client.session(**options)
    cleanup_tasks.append(s.id())
    return s


def close_gracefully(s):
    assert s.close(force=False) is True
    res = s.result(timeout=60)
    assert res.status == "done", res
    return res


def send_action(s, name, input_):
    """A browser action the SDK has no method for, sent the way its own methods send theirs."""
    event = TaskEvent(name="browser_action", payload={"name": name, "input": input_})
    return s._run_async(s._async_handle._send_event(event, has_result=True))


# --- device and stealth ---


def test_desktop_device_and_default_stealth(server, client, cleanup_tasks, browser, site):
    s = opened(client, cleanup_tasks, device="desktop")
    s.goto(site.url("/probe.html"))
    d = s.evaluate_js(PROBE).output
    assert d["innerWidth"] == 1280, d
    assert d["coarse"] is False and d["touch"] is False, d
    # use_stealth defaults to true: nothing reads as automation or headless.
    assert d["webdriver"] is False, d
    assert "Headless" not in d["ua"], d
    assert d["brands"] is not None and not any("Headless" in b for b in d["brands"]), d
    assert d["chrome"] == "object", d
    assert isinstance(d["languages"], list) and d["languages"], d
    # No cursor overlay unless asked for.
    assert s.evaluate_js(CURSOR).output is None
    s.close(force=True)


def test_desktop_lg_device_with_show_cursor(server, client, cleanup_tasks, browser, site):
    s = opened(client, cleanup_tasks, device="desktop-lg", show_cursor=True)
    s.goto(site.url("/probe.html"))
    assert s.evaluate_js("window.innerWidth").output == 1920
    assert s.evaluate_js(CURSOR).output == ["120px", "45px"]
    s.close(force=True)


def test_mobile_device(server, client, cleanup_tasks, browser, site):
    s = opened(client, cleanup_tasks, device="mobile", use_stealth=True)
    s.goto(site.url("/probe.html"))
    m = s.evaluate_js(PROBE).output
    assert m["innerWidth"] < 500, m
    assert m["dpr"] == 3, m
    assert m["coarse"] is True, m
    assert m["touch"] is True, m
    assert "Mobile" in m["ua"], m
    assert m["uaMobile"] is True, m
    assert m["webdriver"] is False and "Headless" not in m["ua"], m
    s.close(force=True)


# --- ad blocking ---


def test_adblock_blocks_easylist_and_easyprivacy_only_when_on(server, client, cleanup_tasks, browser, site):
    page = site.url("/adblock.html")
    on = opened(client, cleanup_tasks)  # use_adblock defaults to true
    on.goto(page)
    assert on.evaluate_js("document.title").output == "Ad block probe"
    assert on.evaluate_js(ADBLOCK_FLAGS).output == {"ad": False, "tracker": False, "app": True}
    on.close(force=True)

    off = opened(client, cleanup_tasks, use_adblock=False)
    off.goto(page)
    assert off.evaluate_js(ADBLOCK_FLAGS).output == {"ad": True, "tracker": True, "app": True}
    off.close(force=True)


# --- allowed_urls ---


def test_allowed_urls_limit_navigation_and_page_requests(server, client, cleanup_tasks, browser, site):
    port = site.base.rsplit(":", 1)[1]
    s = opened(client, cleanup_tasks, allowed_urls=[f"http://127.0.0.1:{port}/**"])
    s.goto(site.url("/index.html"))
    assert s.evaluate_js("document.title").output == "Conformance home"
    with pytest.raises(ToolCallError, match="not allowed"):
        s.goto(f"http://localhost:{port}/second.html")
    assert s.evaluate_js("location.host").output == f"127.0.0.1:{port}", "the refused navigation happened"
    fetch = "(args) => fetch(args.url).then(r => r.ok ? 'loaded' : 'status ' + r.status, () => 'blocked')"
    assert s.evaluate_js(fetch, {"url": f"http://localhost:{port}/app.js"}).output == "blocked"
    assert s.evaluate_js(fetch, {"url": f"http://127.0.0.1:{port}/app.js"}).output == "loaded"
    s.close(force=True)


# --- proxies ---


@pytest.fixture
def auth_proxy():
    p = AuthProxy("alice", "s3cret")
    yield p
    p.close()


def test_proxy_with_credentials_carries_page_and_subresources(
    server, client, cleanup_tasks, browser, site, auth_proxy
):
    s = opened(client, cleanup_tasks, proxy_server=auth_proxy.url, proxy_username="alice", proxy_password="s3cret")
    s.goto(site.url("/adblock.html"))
    assert s.evaluate_js("document.title").output == "Ad block probe"
    assert s.evaluate_js("!!window.appLoaded").output is True
    s.close(force=True)
    fwd = list(auth_proxy.forwarded)
    assert site.url("/adblock.html") in fwd, f"the page did not go through the proxy: {fwd}"
    assert site.url("/app.js") in fwd, f"subresources did not go through the proxy: {fwd}"


def test_proxy_with_a_wrong_password_is_explained(server, client, cleanup_tasks, browser, site, auth_proxy):
    s = opened(client, cleanup_tasks, proxy_server=auth_proxy.url, proxy_username="alice", proxy_password="wrong")
    with pytest.raises(ToolCallError, match="proxy refused the credentials"):
        s.goto(site.url("/index.html"))
    assert auth_proxy.refused > 0, "the proxy was never asked"
    assert auth_proxy.forwarded == []
    s.close(force=True)


@pytest.mark.parametrize("page_407", [True, False], ids=["407-page", "empty-407"])
def test_a_proxy_refusing_the_credentials_fails_goto_with_407(server, client, cleanup_tasks, browser, site, page_407):
    """Even when the proxy's 407 carries a page (squid, tinyproxy), goto does not succeed on
    that page: it fails saying the proxy refused the credentials (407)."""
    p = AuthProxy("alice", "s3cret", page_407=page_407)
    try:
        s = opened(client, cleanup_tasks, proxy_server=p.url, proxy_username="alice", proxy_password="wrong")
        with pytest.raises(ToolCallError) as ei:
            s.goto(site.url("/index.html"))
        msg = str(ei.value)
        assert "proxy refused the credentials" in msg and "407" in msg, msg
        assert p.refused > 0 and p.forwarded == []
        # Still refused on a second try, not shown the proxy's page.
        with pytest.raises(ToolCallError, match="proxy refused the credentials"):
            s.goto(site.url("/adblock.html"))
        s.close(force=True)
    finally:
        p.close()


# --- profiles ---

STORE = """document.cookie = 'login=alice; max-age=3600; path=/';
localStorage.setItem('cart', '3 items');
await new Promise((ok, err) => {
  const r = indexedDB.open('db', 1);
  r.onupgradeneeded = () => r.result.createObjectStore('s');
  r.onsuccess = () => {
    const tx = r.result.transaction('s', 'readwrite');
    tx.objectStore('s').put('kept', 'k');
    tx.oncomplete = () => { r.result.close(); ok(); };
    tx.onerror = err;
  };
  r.onerror = err;
});
return true;"""

READ = """({
  cookie: document.cookie,
  cart: localStorage.getItem('cart'),
  idb: await new Promise(ok => {
    const r = indexedDB.open('db', 1);
    r.onupgradeneeded = () => r.result.createObjectStore('s');
    r.onsuccess = () => {
      const g = r.result.transaction('s').objectStore('s').get('k');
      g.onsuccess = () => { r.result.close(); ok(g.result === undefined ? null : g.result); };
      g.onerror = () => ok(null);
    };
    r.onerror = () => ok(null);
  }),
})"""


def test_profiles_persist_state_and_writers_take_turns(server, client, cleanup_tasks, browser, site):
    pid = f"p-{secrets.token_hex(6)}"
    assert client.create_profile(pid).id == pid
    page = site.url("/index.html")

    first = opened(client, cleanup_tasks, profile_id=pid)
    first.goto(page)
    assert first.evaluate_js(STORE).output is True

    # A second writer on the same profile waits until the first is closed.
    second = opened(client, cleanup_tasks, profile_id=pid)
    done: dict[str, object] = {}

    def goto_second():
        try:
            second.goto(page)
            done["at"] = time.monotonic()
        except Exception as e:  # surfaced below
            done["error"] = e

    t = threading.Thread(target=goto_second, daemon=True)
    t.start()
    t.join(3)
    assert "at" not in done and "error" not in done, f"the second writer did not wait: {done}"
    closed_at = time.monotonic()
    close_gracefully(first)
    t.join(60)
    assert not t.is_alive(), "the second writer never got the profile"
    assert "error" not in done, done
    assert done["at"] >= closed_at

    profiles = {p.id: p for p in client.list_profiles()}
    assert pid in profiles, sorted(profiles)
    p = profiles[pid]
    assert p.cookie_count == 1, p
    assert p.cookie_domains == ["127.0.0.1"], p
    assert p.profile_size_bytes is not None and p.profile_size_bytes > 0, p
    assert p.last_saved_at is not None and p.last_saved_at > 1_600_000_000, p

    # The second session starts from the saved state, and saves its own change.
    assert second.evaluate_js(READ).output == {"cookie": "login=alice", "cart": "3 items", "idb": "kept"}
    second.evaluate_js("localStorage.setItem('cart', 'changed'); return 1")
    close_gracefully(second)

    # Read-only: loads the saved state, saves nothing back.
    reader = opened(client, cleanup_tasks, profile_id=pid, profile_read_only=True)
    reader.goto(page)
    assert reader.evaluate_js(READ).output == {"cookie": "login=alice", "cart": "changed", "idb": "kept"}
    reader.evaluate_js(
        "localStorage.setItem('cart', 'not saved'); document.cookie = 'login=bob; max-age=3600; path=/'; return 1"
    )
    close_gracefully(reader)

    check = opened(client, cleanup_tasks, profile_id=pid, profile_read_only=True)
    check.goto(page)
    assert check.evaluate_js(READ).output == {"cookie": "login=alice", "cart": "changed", "idb": "kept"}
    close_gracefully(check)


# --- extensions ---


def marker_extension() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "manifest.json",
            json.dumps(
                {
                    "manifest_version": 3,
                    "name": "marker",
                    "version": "1.0",
                    "content_scripts": [{"matches": ["<all_urls>"], "js": ["mark.js"], "run_at": "document_end"}],
                }
            ),
        )
        z.writestr("mark.js", "document.documentElement.dataset.marked = 'by-extension';\n")
    return buf.getvalue()


MARKED = """for (let i = 0; i < 20 && !document.documentElement.dataset.marked; i++)
  await new Promise(r => setTimeout(r, 50));
return document.documentElement.dataset.marked || null;"""


def test_uploaded_extension_runs_in_the_page(server, client, cleanup_tasks, browser, site):
    ext = client.upload_extension(io.BytesIO(marker_extension()), name="marker.zip").id
    assert ext
    s = opened(client, cleanup_tasks, extensions=[ext])
    s.goto(site.url("/index.html"))
    assert s.evaluate_js(MARKED).output == "by-extension"
    s.close(force=True)

    plain = opened(client, cleanup_tasks)
    plain.goto(site.url("/index.html"))
    assert plain.evaluate_js(MARKED).output is None
    plain.close(force=True)


# --- task files ---


def test_task_files_attach_to_file_inputs(server, client, cleanup_tasks, browser, site):
    content = b"name,total\nalice,42\n"
    fid = client.upload_file(io.BytesIO(content), name="report.csv").id
    s = opened(client, cleanup_tasks, files=[fid])
    s.goto(site.url("/upload.html"))
    send_action(s, "upload_file", {"selector": "#f", "file": "report.csv"})
    got = s.evaluate_js("const f = document.getElementById('f').files[0]; return [f.name, await f.text()];").output
    assert got == ["report.csv", content.decode()]
    with pytest.raises(ToolCallError, match="report.csv"):
        send_action(s, "upload_file", {"selector": "#f", "file": "other.pdf"})
    s.close(force=True)


# --- start page ---


def test_session_opens_on_its_start_url(server, client, cleanup_tasks, browser, site):
    page = site.url("/second.html")
    r = server.request("POST", "/v1/task", json={"task": None, "url": page})
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    tid = r.json()["r"]["id"]
    cleanup_tasks.append(tid)
    s = SessionHandle(tid, client)
    assert s.evaluate_js("location.href").output == page
    assert s.evaluate_js("document.title").output == "Second page"
    close_gracefully(s)


# --- the smooth CLI ---


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
    try:
        out = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"smooth {' '.join(args)} printed no JSON: {r.stdout!r} {r.stderr!r}") from None
    assert out.get("success") is True, out
    return out


def test_smooth_cli_drives_a_session(server, cleanup_tasks, browser, site):
    with tempfile.TemporaryDirectory(prefix="smooth-home-") as home:
        # start-session waits up to 30 s for a live URL this build does not have.
        started = run_cli(server, home, "start-session", "--no-proxy")
        sid = started["session_id"]
        cleanup_tasks.append(sid)
        assert wait_status(server, sid, ("waiting", "running"), timeout=10)
        run_cli(server, home, "goto", sid, site.url("/index.html"))
        out = run_cli(server, home, "evaluate-js", sid, "document.title")
        assert out["result"] == "Conformance home", out
        closed = run_cli(server, home, "close-session", sid)
        assert closed["session_id"] == sid, closed
    assert wait_final(server, sid, timeout=30)["status"] == "done"


# --- a browser that dies ---


def test_an_idle_session_whose_chromium_dies_fails_within_seconds(server, client, cleanup_tasks, browser, site):
    """No command follows the crash: the session still ends, naming it, with its recording."""
    s = opened(client, cleanup_tasks, enable_recording=True)
    s.goto(site.url("/index.html"))
    time.sleep(1)
    pids = chromium_browser_pids(server.proc.pid)
    assert pids, f"no Chromium browser process is a child of smoothd (pid {server.proc.pid})"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    res = s._handle.result(timeout=30)
    took = time.monotonic() - killed
    assert res.status == "failed" and "browser crashed" in (res.error or ""), res
    # Well before any idle timeout (15 minutes by default).
    assert took < 20, f"the session noticed after {took:.1f}s"
    final = wait_final(server, s.id(), timeout=10)
    assert final.get("recording_url"), f"the recording was not finalised: {final}"

    fresh = opened(client, cleanup_tasks)
    fresh.goto(site.url("/second.html"))
    assert fresh.evaluate_js("document.title").output == "Second page"
    fresh.close(force=True)


def test_a_killed_chromium_fails_its_session_and_the_next_one_works(server, client, cleanup_tasks, browser, site):
    s = opened(client, cleanup_tasks)
    s.goto(site.url("/index.html"))
    pids = chromium_browser_pids(server.proc.pid)
    assert pids, f"no Chromium browser process is a child of smoothd (pid {server.proc.pid})"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # The action that meets the dead browser is answered 500, which the SDK raises as
    # RuntimeError, provided the answer is served before the final status (the SDK drops the
    # events of the first final response and cancels what is still pending).
    try:
        s.evaluate_js("1")
        answer_error: BaseException | None = None
    except Exception as e:  # checked after the rest, so one failure does not hide the others
        answer_error = e
    final = wait_final(server, s.id(), timeout=30)
    assert final["status"] == "failed", final
    assert "crash" in (final.get("error") or ""), final
    # The SDK's own view of the session agrees (result() of the handle, which was not closed).
    res = s._handle.result(timeout=30)
    assert res.status == "failed" and "crash" in (res.error or ""), res

    fresh = opened(client, cleanup_tasks)
    fresh.goto(site.url("/second.html"))
    assert fresh.evaluate_js("document.title").output == "Second page"
    fresh.close(force=True)

    assert isinstance(answer_error, RuntimeError), (
        f"evaluate_js on a crashed browser raised {answer_error!r}, not RuntimeError: the 500 answer "
        "was first served together with the final status, which the SDK never reads"
    )
