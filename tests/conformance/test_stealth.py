"""Stealth against what public bot detectors check, through the real SDK: the detector page in
tests/fixtures/site/detector (rebrowser-bot-detector, sannysoft, fingerprint-scan and CreepJS
"lies" checks, each named in its source) runs in the page, a same-origin and a cross-origin
iframe (127.0.0.1 vs localhost), and dedicated, shared and service workers, and reports every
check as JSON read with evaluate_js.

With `use_stealth` on, every check passes on every device preset (the list in
crates/smoothd-core/src/device.rs; a preset added there and not here fails
test_every_device_preset_is_tested). With it off, a stated list fails: the control that proves
the page detects something.
"""

import json
import pathlib
import re
import uuid

import pytest
from smoothd_support import llm_env, scripted_model, serve


@pytest.fixture(scope="module")
def llm():
    yield from scripted_model()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, llm):
    """The server of this module's tests, with the agent pointed at the scripted model."""
    yield from serve(request.param, llm_env(llm.base_url))

DEVICE_RS = pathlib.Path(__file__).resolve().parents[2] / "crates" / "smoothd-core" / "src" / "device.rs"

# viewport width, height, device pixel ratio, mobile: the presets of crates/smoothd-core/src/device.rs
PRESETS = {
    "desktop": (1280, 800, 1, False),
    "desktop-lg": (1920, 1080, 1, False),
    "mobile": (390, 844, 3, True),
}

# Without stealth the browser says it is automated, the standard way: navigator.webdriver is
# true. Nothing else changes, so nothing else fails, on any preset.
EXPECTED_WITHOUT_STEALTH = {"navigatorWebdriver"}

# What smoothd's stealth used to do (a JavaScript getter for navigator.webdriver, a wrapped
# WebGL getParameter): the detector's CreepJS checks must catch it.
OLD_PATCH = """
Object.defineProperty(Navigator.prototype, 'webdriver', { get: () => false, configurable: true, enumerable: true });
const original = WebGLRenderingContext.prototype.getParameter;
WebGLRenderingContext.prototype.getParameter = function (p) { return original.call(this, p); };
return true;
"""


def test_every_device_preset_is_tested():
    names = re.search(r'pub const NAMES: &\'static str = "([^"]+)"', DEVICE_RS.read_text()).group(1)
    assert sorted(n.strip() for n in names.split(",")) == sorted(PRESETS), names


def detector_url(site, device: str) -> str:
    w, h, dpr, mobile = PRESETS[device]
    port = site.base.rsplit(":", 1)[1]
    return (
        f"{site.base}/detector/index.html?w={w}&h={h}&dpr={dpr}&mobile={int(mobile)}"
        f"&cross=http://localhost:{port}"
    )


def run_detector(client, cleanup_tasks, site, patch: str | None = None, **options) -> tuple[dict, dict | None]:
    """The detector's report; with `patch`, also the report after running it in the page."""
    s = client.session(**options)
    cleanup_tasks.append(s.id())
    patched = None
    try:
        s.goto(detector_url(site, options["device"]))
        report = s.evaluate_js("detectorResults()").output
        if patch is not None:
            assert s.evaluate_js(patch).output is True
            patched = s.evaluate_js("detectorResults()").output
    finally:
        s.close(force=True)
    assert isinstance(report, dict) and report.get("checks"), report
    return report, patched


def failures(report: dict) -> dict:
    return {name: c["detail"] for name, c in report["checks"].items() if not c["pass"]}


@pytest.mark.parametrize("device", list(PRESETS))
def test_detector_passes_with_stealth(server, client, cleanup_tasks, browser, site, device):
    report, _ = run_detector(client, cleanup_tasks, site, device=device, use_stealth=True)
    checks = report["checks"]
    # Every kind of check ran, and every context answered.
    for source in ("rebrowser-bot-detector", "sannysoft", "fingerprint-scan", "CreepJS"):
        assert any(source in c["source"] for c in checks.values()), source
    for ctx in ("dedicatedWorker", "sharedWorker", "serviceWorker", "sameOriginIframe", "crossOriginIframe"):
        assert checks[f"context answered: {ctx}"]["pass"], (ctx, checks[f"context answered: {ctx}"])
    failed = failures(report)
    assert failed == {}, json.dumps(failed, indent=1)[:4000]
    w = report["contexts"]["window"]
    # Languages and Accept-Language agree and are well-formed (no q-value in a tag).
    assert w["languages"] == ["en-US", "en"], w["languages"]
    assert w["headers"]["accept-language"].split(",")[0] == "en-US", w["headers"]
    # The device's own identity.
    assert ("Mobile" in w["userAgent"]) is PRESETS[device][3], w["userAgent"]
    assert w["mobile"] is PRESETS[device][3], w


@pytest.mark.parametrize("device", list(PRESETS))
def test_detector_control_without_stealth(server, client, cleanup_tasks, browser, site, device):
    report, patched = run_detector(client, cleanup_tasks, site, patch=OLD_PATCH, device=device, use_stealth=False)
    failed = failures(report)
    assert set(failed) == EXPECTED_WITHOUT_STEALTH, json.dumps(failed, indent=1)[:4000]
    w = report["contexts"]["window"]
    assert w["webdriver"] is True, w
    # The iframes say so too (the automation flag reaches them).
    for frame in ("sameOriginIframe", "crossOriginIframe"):
        assert report["contexts"][frame]["webdriver"] is True, (frame, report["contexts"][frame])
    # Sizes and languages are not stealth: they are right either way.
    assert w["languages"] == ["en-US", "en"], w
    # A JavaScript patch is a lie the detector sees: toString, name, prototype, receiver checks.
    patched_failures = failures(patched)
    assert "lie: Navigator.webdriver" in patched_failures, patched_failures
    assert "lie: WebGLRenderingContext.getParameter" in patched_failures, patched_failures
    assert any("toString" in d for d in patched_failures["lie: Navigator.webdriver"]), patched_failures


@pytest.mark.parametrize("device", ["mobile", "desktop"])
def test_detector_passes_in_a_browser_of_its_own(server, client, cleanup_tasks, browser, site, device):
    # A profile gets the session a dedicated Chromium: it is launched for the device too.
    pid = f"stealth-{device}-{uuid.uuid4().hex[:8]}"
    assert client.create_profile(pid).id == pid
    report, _ = run_detector(client, cleanup_tasks, site, device=device, use_stealth=True, profile_id=pid)
    failed = failures(report)
    assert failed == {}, json.dumps(failed, indent=1)[:4000]
    assert ("Mobile" in report["contexts"]["sharedWorker"]["userAgent"]) is PRESETS[device][3], report["contexts"]


@pytest.mark.parametrize("device", sorted(PRESETS))
def test_an_agent_task_leaves_no_trace_the_detector_sees(server, client, browser, site, llm, device):
    """The agent's page helper runs in an isolated world and its settling wait patches nothing:
    after the agent has viewed the page, scrolled and clicked, every check passes, and the page
    finds no `__smoothd` global and native timers (the `setTimeout` lie check)."""
    marker = llm.script(
        "detector",
        [
            [{"op": "scroll", "direction": "down"}],
            # Back to the top: on a phone the first scroll moves the button out of view.
            [{"op": "scroll", "direction": "up"}],
            [{"op": "click", "target": {"text": "Run the checks"}}],
            [{"op": "wait", "seconds": 3}],
            [{"op": "done", "output_from": r"Detector: (.+)"}],
        ],
    )
    res = client.run(
        f"Run the bot detector and report its summary {marker}",
        url=detector_url(site, device),
        device=device,
        use_stealth=True,
        max_steps=8,
    ).result(timeout=120)
    assert res.status == "done", res
    out = str(res.output)
    passed, total = out.split(" passed")[0].split("/")
    assert passed == total and int(total) > 50, out
    assert "failed: none" in out and "smoothd globals: none" in out, out
    # The agent did view the page more than once (the helper ran).
    assert len(llm.requests(marker)) >= 5
