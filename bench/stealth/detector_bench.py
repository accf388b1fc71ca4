"""The bot detector page (tests/fixtures/site/detector) under browser-use and under smoothd, in
one run, for BENCHMARKS.md ("Stealth against bot detectors").

browser-use runs with its default Chromium profile: the BrowserProfile of
bench/peer-bench/run_browser_use.py (Debian's /usr/bin/chromium, headless, the closed-network
flags, no extensions); browser-use adds its own default flags on top. Its viewport is its own
choice, so the detector is told that size (the "preset" it is checked against) after a first
load reads it. smoothd runs through the real SDK, every device preset with `use_stealth` on,
and `desktop` with it off.

Run it in the peer-bench venv (browser-use 0.13.14 and smooth-py 0.4.5; `bench/peer-bench/setup.sh`):

    SMOOTHD_BIN=target/debug/smoothd bench/peer-bench/.venv/bin/python bench/stealth/detector_bench.py

It prints a Markdown table of checks passed per detector, and the failed checks of each run;
`--json FILE` also writes every report. Not part of the test suite.
"""

import argparse
import asyncio
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

os.environ["SMOOTH_TELEMETRY"] = "off"
REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "tests" / "fixtures" / "site"
CHROMIUM = "/usr/bin/chromium"
CLOSED_NETWORK = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"
PRESETS = {"desktop": (1280, 800, 1, 0), "desktop-lg": (1920, 1080, 1, 0), "mobile": (390, 844, 3, 1)}
SOURCES = ["rebrowser-bot-detector", "sannysoft", "fingerprint-scan", "CreepJS"]


def serve_site() -> str:
    """tests/fixtures/site on 127.0.0.1 (reachable as localhost too, for the cross-origin iframe),
    with /echo-headers as the conformance suite's site has it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/echo-headers":
                body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
                ctype = "application/json"
            else:
                f = (SITE / path.lstrip("/")).resolve()
                if not f.is_relative_to(SITE) or not f.is_file():
                    self.send_response(404)
                    self.end_headers()
                    return
                body = f.read_bytes()
                ctype = "application/javascript" if path.endswith(".js") else "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def detector_url(base: str, w, h, dpr, mobile) -> str:
    port = base.rsplit(":", 1)[1]
    return f"{base}/detector/index.html?w={w}&h={h}&dpr={dpr}&mobile={mobile}&cross=http://localhost:{port}"


async def browser_use_report(base: str) -> dict:
    from browser_use import BrowserProfile, BrowserSession

    work = Path(tempfile.mkdtemp(prefix="stealth-bench-bu-"))
    profile = BrowserProfile(
        executable_path=CHROMIUM,
        headless=True,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", CLOSED_NETWORK],
        user_data_dir=str(work / "chrome-profile"),
        enable_default_extensions=False,
        chromium_sandbox=False,
        keep_alive=False,
    )
    session = BrowserSession(browser_profile=profile)
    await session.start()
    try:
        await session.navigate_to(f"{base}/detector/frame.html")
        page = await session.get_current_page()
        w, h, dpr, touch = json.loads(
            await page.evaluate("() => [innerWidth, innerHeight, devicePixelRatio, navigator.maxTouchPoints > 0]")
        )
        await session.navigate_to(detector_url(base, w, h, dpr, int(touch)))
        page = await session.get_current_page()
        return json.loads(await page.evaluate("() => detectorResults()"))
    finally:
        await session.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoothd_reports(base: str, binary: str) -> dict:
    from smooth import SmoothClient

    tmp = Path(tempfile.mkdtemp(prefix="stealth-bench-smoothd-"))
    port = free_port()
    key = "smd_bench_" + os.urandom(16).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMOOTHD_")}
    env.update(
        SMOOTHD_LISTEN=f"127.0.0.1:{port}", SMOOTHD_PUBLIC_URL=f"http://127.0.0.1:{port}",
        SMOOTHD_DATA_DIR=str(tmp / "data"), SMOOTHD_DATABASE_URL=f"sqlite://{tmp / 'smoothd.db'}",
        SMOOTHD_API_KEY=key, SMOOTHD_WORKERS="1", SMOOTHD_CHROMIUM_ARGS=json.dumps([CLOSED_NETWORK]),
    )
    proc = subprocess.Popen([binary, "serve"], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "stderr", "wb"))
    try:
        for _ in range(300):
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        client = SmoothClient(api_key=key, base_url=f"http://127.0.0.1:{port}/", timeout=30)
        runs = [(d, True) for d in PRESETS] + [("desktop", False)]
        out = {}
        for device, stealth in runs:
            s = client.session(device=device, use_stealth=stealth)
            try:
                s.goto(detector_url(base, *PRESETS[device]))
                out[f"smoothd {device}" + ("" if stealth else " (stealth off)")] = s.evaluate_js("detectorResults()").output
            finally:
                s.close(force=True)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def source_of(check: dict) -> str:
    return next(s for s in SOURCES if s in check["source"])


def table(reports: dict) -> str:
    names = list(reports)
    lines = ["| detector | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for src in SOURCES:
        cells = []
        for n in names:
            checks = [c for c in reports[n]["checks"].values() if source_of(c) == src]
            cells.append(f"{sum(c['pass'] for c in checks)}/{len(checks)}")
        lines.append(f"| {src} | " + " | ".join(cells) + " |")
    cells = [f"**{sum(c['pass'] for c in r['checks'].values())}/{len(r['checks'])}**" for r in reports.values()]
    lines.append("| **all** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write every report here")
    a = ap.parse_args()
    binary = str(Path(os.environ.get("SMOOTHD_BIN", REPO / "target" / "debug" / "smoothd")).resolve())
    base = serve_site()
    reports = {"browser-use (default profile)": asyncio.run(browser_use_report(base))}
    reports.update(smoothd_reports(base, binary))
    print(table(reports))
    print()
    for name, r in reports.items():
        failed = [k for k, c in r["checks"].items() if not c["pass"]]
        print(f"- {name}: {', '.join(failed) if failed else 'none failed'}")
    if a.json:
        Path(a.json).write_text(json.dumps(reports, indent=1))
    print("\nchromium:", subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip(),
          file=sys.stderr)


if __name__ == "__main__":
    main()
