"""What the user sees of a run, through the real SDK: live_url() opened in a separate headless
Chromium (frames that match the task's page, a click that lands in it, view-only refused),
then recording_url() (a video ffprobe decodes, as long as the run) and downloads_url() (an
archive with the downloaded file's exact bytes)."""

import io
import json
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
import requests

from smoothd_support import SITE_PAGES, Viewer, wait_final, wait_status

# The quadrants of /media.html, as the task's page paints them: (x, y) fractions -> RGB.
QUADRANTS = {
    (0.25, 0.25): (220, 30, 30),
    (0.75, 0.25): (30, 200, 30),
    (0.25, 0.75): (30, 30, 220),
    (0.75, 0.75): (240, 240, 20),
}

# Reads pixels of the live view's current frame (as decoded by the viewer's browser).
SAMPLE = """(() => {
  const img = document.getElementById('screen');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  return %s.map(([x, y]) => Array.from(g.getImageData(Math.floor(x * c.width), Math.floor(y * c.height), 1, 1).data.slice(0, 3)));
})()"""

IMG_RECT = "(() => { const r = document.getElementById('screen').getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()"


def ffprobe(path: Path) -> dict:
    r = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, f"ffprobe cannot decode the recording: {r.stderr}"
    return json.loads(r.stdout)


def distinct_frames(path: Path) -> int:
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "framemd5", "-"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return len({ln.rsplit(",", 1)[-1].strip() for ln in r.stdout.splitlines() if ln and not ln.startswith("#")})


@pytest.fixture
def tools():
    for t in ("ffprobe", "ffmpeg"):
        if shutil.which(t) is None:
            pytest.fail(f"{t} is needed (Debian: apt-get install ffmpeg); scripts/test installs it")


def test_live_view_recording_and_downloads_through_the_sdk(server, client, site, browser, tools, cleanup_tasks):
    s = client.session()
    cleanup_tasks.append(s.id())
    t0 = time.monotonic()
    live = s.live_url(interactive=True, embed=False, timeout=30)
    assert time.monotonic() - t0 < 3, "live_url() took too long"
    assert "interactive=true" in live and "apikey" not in live, live
    view_only = s.live_url(interactive=False, embed=True)
    assert "interactive=false" in view_only and "embed=true" in view_only, view_only
    wait_status(server, s.id(), "running")
    run_started = time.monotonic()
    s.goto(site.url("/media.html"))

    with Viewer() as viewer:
        tab = viewer.open(live)
        viewer.wait(tab, "window.live && window.live.frames > 0 && window.live.meta !== null")
        # Wait for a frame of the fixture page itself (the first may show the blank start page).
        viewer.wait(tab, "window.live.meta.url.endsWith('/media.html')")
        points = list(QUADRANTS)
        deadline = time.monotonic() + 20
        while True:
            got = viewer.eval(tab, SAMPLE % json.dumps(points))
            ok = all(max(abs(a - b) for a, b in zip(px, QUADRANTS[p])) <= 40 for p, px in zip(points, got))
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # The task's page, read from inside the task's browser, paints exactly these colors.
        page = s.evaluate_js("[...document.querySelectorAll('.q')].map(d => getComputedStyle(d).backgroundColor)")
        assert page.output == [f"rgb({r}, {g}, {b})" for (r, g, b) in QUADRANTS.values()], page.output
        assert ok, f"live frame pixels {got} do not match the page's quadrants {list(QUADRANTS.values())}"
        meta = viewer.eval(tab, "window.live.meta")
        assert (meta["width"], meta["height"]) == (1280, 800), meta
        # The live view keeps the page's aspect ratio.
        x, y, w, h = viewer.eval(tab, IMG_RECT)
        assert abs(w / h - 1280 / 800) < 0.02, (w, h)

        # A real click in the live view (lower right quadrant) lands in the task's page.
        viewer.click(tab, x + 0.75 * w, y + 0.75 * h)
        deadline = time.monotonic() + 10
        clicks = []
        while not clicks and time.monotonic() < deadline:
            clicks = s.evaluate_js("window.clicks").output
            time.sleep(0.2)
        assert len(clicks) == 1, clicks
        assert abs(clicks[0][0] - 960) <= 3 and abs(clicks[0][1] - 600) <= 3, clicks

        # View-only: the page sends nothing, and input forced through its socket is refused.
        ro = viewer.open(view_only)
        viewer.wait(ro, "window.live && window.live.frames > 0")
        rx, ry, rw, rh = viewer.eval(ro, IMG_RECT)
        viewer.click(ro, rx + 0.25 * rw, ry + 0.25 * rh)
        viewer.eval(
            ro,
            "ws.send(JSON.stringify({type: 'mouse', action: 'down', x: 0.25, y: 0.25})),"
            "ws.send(JSON.stringify({type: 'mouse', action: 'up', x: 0.25, y: 0.25})), true",
        )
        errors = viewer.wait(ro, "window.live.errors.length > 0 && window.live.errors")
        assert "view-only" in errors[0], errors
        time.sleep(0.5)
        assert len(s.evaluate_js("window.clicks").output) == 1, "a view-only click reached the page"

        # A download, then a graceful close.
        s.evaluate_js("document.getElementById('dl').click()")
        time.sleep(2)
        s.close(force=False)
        viewer.wait(tab, "window.live.ended")
    final = wait_final(server, s.id(), timeout=60)
    run = time.monotonic() - run_started
    assert final["status"] == "done", final
    assert requests.get(live, timeout=10).status_code == 410, "the live link works after the task ended"

    rec = s.recording_url(timeout=60)
    assert rec.startswith(server.base + "/artifacts/"), rec
    r = requests.get(rec, timeout=60)  # no API key
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4", (r.status_code, r.headers)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "recording.mp4"
        path.write_bytes(r.content)
        info = ffprobe(path)
        duration = float(info["format"]["duration"])
        assert info["streams"][0]["codec_name"] == "h264", info
        assert abs(duration - run) <= 0.2 * run, f"video {duration:.1f}s, run {run:.1f}s"
        assert distinct_frames(path) > 1
    seek = requests.get(rec, headers={"Range": "bytes=0-99"}, timeout=30)
    assert seek.status_code == 206 and len(seek.content) == 100, seek.status_code

    dl = s.downloads_url(timeout=60)
    z = zipfile.ZipFile(io.BytesIO(requests.get(dl, timeout=60).content))
    assert z.namelist() == ["quarterly report.csv"], z.namelist()
    assert z.read("quarterly report.csv") == SITE_PAGES["/report.csv"].encode()


def test_recording_off_and_nothing_downloaded(server, client, browser, cleanup_tasks):
    s = client.session(enable_recording=False)
    cleanup_tasks.append(s.id())
    wait_status(server, s.id(), "running")
    s.close(force=False)
    wait_final(server, s.id())
    from smooth import ApiError

    for call in (s.recording_url, s.downloads_url):
        with pytest.raises(ApiError) as e:
            call(timeout=10)
        assert e.value.status_code == 404
