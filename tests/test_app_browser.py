"""The web app in a real browser: headless Chromium (Debian's) driven by Playwright against scripts/app.py on a
free loopback port: upload the demo clip, draw a box with two clicks, run propagate, download the result,
cancel, brush, and the errors shown in the page."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from fffvdi.io import load_video, write_video

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FFFVDI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# FFFVDI_UPDATE_SCREENSHOT=1 rewrites README's picture assets/app_screenshot.png from a run on the whole 40-frame demo
# clip at full size, where every hole pixel is revealed by some frame (on 20 frames only half is: Telea smears it).
SHOWCASE = bool(os.environ.get("FFFVDI_UPDATE_SCREENSHOT"))
# Otherwise 20 frames of the demo clip at half size: tracking + propagate take a few seconds each.
FRAMES, H, W = (40, 240, 432) if SHOWCASE else (20, 120, 216)
# (x, y, w, h) around the demo's ellipse on frame 0 (README's --box example; the half-size mask: x 108-170, y 0-48)
BOX = (210, 0, 136, 100) if SHOWCASE else (102, 0, 74, 54)
TRACK_TIMEOUT_S = 240 if SHOWCASE else 60  # tracking the brushed mask over the clip


def _browser():
    """A launched Chromium, or a skip naming why there is none."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install -y chromium)")
    pw = sync_playwright().start()
    try:
        return pw, pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as err:  # a browser that is there but cannot start here
        pw.stop()
        pytest.skip(f"chromium at {CHROMIUM} cannot be launched: {str(err).splitlines()[0]}")


def _wait_status(page, condition: str, timeout: float = 60) -> str:
    """Wait until the status box's text `v` satisfies the JavaScript `condition`; returns the text."""
    page.wait_for_function(f"() => {{ const e = document.querySelector('#status textarea'); const v = e ? e.value : '';"
                           f" return {condition}; }}", timeout=timeout * 1000)
    return page.locator("#status textarea").input_value()


def _picture(page) -> tuple[float, float, float]:
    """(left, top, displayed px per frame px) of the frame picture, once the layout has stopped moving
    (the brush editor beside it settles late); the img element shows the picture with object-fit contain."""
    js = """() => { const i = document.querySelector('#frame-image img'); const r = i.getBoundingClientRect();
        const s = Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight);
        return [r.x + (r.width - i.naturalWidth * s) / 2, r.y + (r.height - i.naturalHeight * s) / 2, s]; }"""
    last = None
    for _ in range(60):
        now = page.evaluate(js)
        if now == last:
            return tuple(now)
        last = now
        page.wait_for_timeout(500)
    pytest.fail(f"the frame picture never stopped moving: {last}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"app did not serve {url} in {timeout} s: {log.read_text()[-2000:]}")


def _half(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA if img.ndim == 3 else cv2.INTER_NEAREST)


@pytest.fixture
def demo_clip(tmp_path) -> Path:
    frames = np.stack([cv2.cvtColor(_half(cv2.imread(str(ROOT / f"assets/demo/frames/{i:05d}.jpg"))), cv2.COLOR_BGR2RGB)
                       for i in range(FRAMES)])
    return write_video(tmp_path / "demo clip.mp4", frames, fps=12)


def _drive(page, url: str, tmp_path: Path, demo_clip: Path, work: Path, artifacts: Path) -> None:
    """Everything the test does in the page."""
    page.goto(url)
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    page.set_input_files("#upload input[type=file]", str(bad))  # a bad file: a message, and the app serves on
    text = _wait_status(page, "v.startsWith('error')")
    assert "cannot be read" in text and "\n" not in text
    page.locator("#upload button[aria-label='Clear']").click()
    page.set_input_files("#upload input[type=file]", str(demo_clip))
    assert _wait_status(page, "v.startsWith('loaded')").startswith(f"loaded {FRAMES} frames of {W}x{H} at 12 fps")

    img = page.locator("#frame-image img")
    img.wait_for()
    page.wait_for_function("() => document.querySelector('#frame-image img').naturalWidth == " + str(W))
    page.locator("#brush canvas").first.wait_for()  # the editor beside the frame has laid itself out
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    x, y, w, h = BOX
    for px, py in ((x + w - 1, y + h - 1), (x, y)):  # any two opposite corners, each pixel clicked inside the box
        src = img.get_attribute("src")
        changed = f"() => document.querySelector('#frame-image img').getAttribute('src') !== {src!r}"
        for attempt in range(3):  # on a loaded machine Chromium now and then drops a click made as the page settles
            x0, y0, scale = _picture(page)
            page.mouse.click(x0 + (px + 0.5) * scale, y0 + (py + 0.5) * scale)
            try:  # the frame comes back with the first corner marked, then with the box: one click at a time
                page.wait_for_function(changed, timeout=15000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
    page.wait_for_function("() => !['', '0'].includes(document.querySelector('#box-w input').value)")
    drawn = [int(page.locator(f"#box-{k} input").input_value()) for k in "xywh"]
    assert tuple(drawn) == BOX, drawn  # both clicked pixels inside, whatever the display scale

    page.locator("#method").get_by_label("fffvdi").check()  # no checkpoint: told so in the page, nothing runs
    page.click("#run")
    _wait_status(page, "v.includes('needs a checkpoint')", timeout=20)
    page.locator("#method").get_by_label("propagate").check()
    page.click("#run")
    _wait_status(page, "v.startsWith('queued') || v.startsWith('tracking')")  # running: masks, then inference
    # while it runs, the progress shows over the result video: the status line and the downloads stay uncovered
    shown = page.evaluate("""() => { const t = document.querySelector('#status textarea'), r = t.getBoundingClientRect();
        const overlay = id => [...document.querySelectorAll(id + ' .wrap')].some(w => !w.classList.contains('hide'));
        return [document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === t,
                overlay('#status'), overlay('#downloads'), overlay('#result-video')]; }""")
    assert shown == [True, False, False, True], shown
    page.click("#cancel")  # before the inference step ends (its start alone takes seconds)
    assert _wait_status(page, "v === 'cancelled' || v === 'done'", timeout=30) == "cancelled"
    page.click("#run")  # the app serves on after a cancel
    text = _wait_status(page, "v === 'done' || (v.startsWith('error') && !v.includes('checkpoint'))", timeout=120)
    assert text == "done", text
    page.locator("#result-video video").wait_for(timeout=20000)
    link = page.locator("#downloads a[download='inpainted.mp4']")
    with page.expect_download() as info:
        link.click()
    got = tmp_path / "downloaded.mp4"
    info.value.save_as(got)
    page.screenshot(path=str(artifacts / "app_screenshot.png"), full_page=True)
    if SHOWCASE:  # 256 colours: about 130 KB instead of 500 KB, the textures barely change
        from PIL import Image
        shot = Image.open(artifacts / "app_screenshot.png").convert("RGB")
        shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(ROOT / "assets" / "app_screenshot.png",
                                                                          optimize=True)

    result, source = load_video(got), load_video(demo_clip)
    assert result.frames.shape == source.frames.shape == (FRAMES, H, W, 3)
    assert result.fps == source.fps == 12
    masks = np.stack([_half(cv2.imread(str(ROOT / f"assets/demo/masks/{i:05d}.png"), 0)) > 127 for i in range(FRAMES)])
    hole_diff = np.abs(result.frames.astype(int) - source.frames)[masks].mean()
    assert hole_diff > 20, hole_diff  # the object is gone: the hole holds background now, not the ellipse
    assert page.locator("#downloads a[download='inpainted_frames.zip']").count() == 1  # the PNG frames zip too
    # the brush instead of the box: paint over the frame's middle, preview the masks tracked from it
    before = page.locator("#masks-video video").get_attribute("src")
    canvas = page.locator("#brush canvas").first.bounding_box()
    cx, cy = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
    page.mouse.move(cx - 40, cy - 15)
    page.mouse.down()
    for k in range(4):
        page.mouse.move(cx + 40, cy - 15 + 10 * k, steps=6)
        page.mouse.move(cx - 40, cy - 10 + 10 * k, steps=6)
    page.mouse.up()
    page.click("#track")
    text = _wait_status(page, "v.startsWith('error') || (v === 'done' && "
                        f"document.querySelector('#masks-video video').getAttribute('src') !== {before!r})",
                        timeout=TRACK_TIMEOUT_S)
    assert text == "done", text

    sessions = list(work.glob("fffvdi-app-*/session-*"))
    assert len(sessions) == 1
    page.close()  # the tab closes: its session folder goes
    deadline = time.monotonic() + 30
    while sessions[0].exists():
        assert time.monotonic() < deadline, "the closed tab's session folder was not removed"
        time.sleep(0.2)


def test_upload_box_propagate_download_in_a_real_browser(tmp_path, demo_clip):
    pw, browser = _browser()
    artifacts = Path(os.environ.get("FFFVDI_ARTIFACTS", tmp_path / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    port, work = _free_port(), tmp_path / "work"
    log = tmp_path / "app.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "wb") as out:
        app = subprocess.Popen([sys.executable, str(ROOT / "scripts/app.py"), "--port", str(port), "--workdir", str(work)],
                               stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(url, app, log)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(60000)  # a shared, loaded CI machine can be slow to answer
        _drive(page, url, tmp_path, demo_clip, work, artifacts)
    except BaseException:
        if "page" in locals() and not page.is_closed():
            page.screenshot(path=str(artifacts / "app_failure.png"), full_page=True)
        shutil.copy(log, artifacts / "app_failure.log")
        raise
    finally:
        browser.close()
        pw.stop()
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            app.kill()
    assert app.returncode == 0, log.read_text()[-2000:]
    assert work.is_dir() and not any(work.iterdir())  # every session file was removed at exit
