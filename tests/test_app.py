"""Web app internals without a browser: job queue (order, cancel, progress, error lines), uploads (generated
names, zip-slip), session folders, annotations and the inference command (scripts/inference.py run for real)."""
import os
import stat
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from fffvdi.app.commands import (
    RunSettings, box_annotation, box_from_clicks, brush_annotation, clicked_pixel, inference_step, save_annotation,
    tracking_step, zip_frames,
)
from fffvdi.app.jobs import CANCELLED, DONE, FAILED, Job, JobQueue, Step, error_line
from fffvdi.app.session import SessionStore, extract_frames_zip, upload_suffix
from fffvdi.errors import InputError
from fffvdi.io import load_video, write_video

PY = sys.executable


@pytest.fixture
def jobs():
    q = JobQueue(kill_after=2.0)
    yield q
    q.shutdown()


def _py(code: str) -> list[str]:
    return [PY, "-c", code]


def _frames(n=6, h=32, w=48) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _png(frame: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()


# ---- job queue ----

def test_jobs_run_one_at_a_time_in_submission_order(jobs, tmp_path):
    log = tmp_path / "order.txt"
    code = "import sys,time; open(sys.argv[1],'a').write('start %s\\n' % sys.argv[2]); time.sleep(0.3); " \
           "open(sys.argv[1],'a').write('end %s\\n' % sys.argv[2])"
    ids = [jobs.submit([Step(f"j{k}", [PY, "-c", code, str(log), str(k)])], tmp_path / f"log{k}").id for k in range(3)]
    assert jobs.ahead(ids[2]) == 2 or jobs.get(ids[2]).state != "queued"
    for i in ids:
        assert jobs.wait(i, timeout=30).state == DONE
    assert log.read_text().split("\n")[:-1] == [f"{w} {k}" for k in range(3) for w in ("start", "end")]


def test_cancel_stops_a_running_job_and_its_children_and_the_queue_goes_on(jobs, tmp_path):
    pid_file = tmp_path / "child.pid"
    spawn = ("import subprocess,sys,time; c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); "
             f"open({str(pid_file)!r},'w').write(str(c.pid)); time.sleep(60)")
    marker = tmp_path / "second_step_ran"
    job = jobs.submit([Step("sleep", _py(spawn)), Step("after", _py(f"open({str(marker)!r},'w')"))], tmp_path / "l1")
    queued = jobs.submit([Step("queued", _py(f"open({str(marker)!r},'w')"))], tmp_path / "l2")
    later = jobs.submit([Step("later", _py("print('ok')"))], tmp_path / "l3")
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert jobs.cancel(queued.id) and jobs.get(queued.id).state == CANCELLED
    t0 = time.monotonic()
    assert jobs.cancel(job.id)
    assert jobs.wait(job.id, timeout=10).state == CANCELLED
    assert time.monotonic() - t0 < 8
    assert jobs.wait(later.id, timeout=30).state == DONE  # the app keeps serving
    assert not marker.exists()  # neither the cancelled job's next step nor the cancelled queued job ran
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the step's child process survived the cancel"
        time.sleep(0.05)
    assert not jobs.cancel(later.id)  # finished: nothing to cancel


def test_a_failed_step_reports_its_error_line_and_stops_the_job(jobs, tmp_path):
    fail = "import sys; print('loading'); print('warning: x', file=sys.stderr); " \
           "print('error: checkpoint /nope not found; pass a folder', file=sys.stderr); sys.exit(2)"
    marker = tmp_path / "ran"
    job = jobs.wait(jobs.submit([Step("a", _py(fail)), Step("b", _py(f"open({str(marker)!r},'w')"))],
                                tmp_path / "l").id, timeout=30)
    assert (job.state, job.message, job.returncode, job.step) == (FAILED, "checkpoint /nope not found; pass a folder", 2, 0)
    assert job.describe() == "error: checkpoint /nope not found; pass a folder"
    assert not marker.exists()
    crash = jobs.wait(jobs.submit([Step("c", _py("raise ValueError('bad value 7')"))], tmp_path / "l2").id, timeout=30)
    assert crash.state == FAILED and crash.message.startswith("the run failed (exit 1)")
    assert "ValueError: bad value 7" in crash.message
    killed = jobs.wait(jobs.submit([Step("k", _py("import os,signal; os.kill(os.getpid(), signal.SIGKILL)"))],
                                   tmp_path / "l3").id, timeout=30)
    assert killed.state == FAILED and "out of memory" in killed.message
    missing = jobs.wait(jobs.submit([Step("m", ["/nonexistent/interpreter"])], tmp_path / "l4").id, timeout=30)
    assert missing.state == FAILED and "could not run m" in missing.message
    assert jobs.wait(jobs.submit([Step("ok", _py("pass"))], tmp_path / "l5").id, timeout=30).state == DONE


def test_error_line_prefers_the_last_error_and_names_signals():
    assert error_line("x\nerror: first\nerror: second\n", 2) == "second"
    assert "signal 15" in error_line("", -15)
    assert error_line("Traceback\n  File x\nKeyError: 'a'\n", 1) == "the run failed (exit 1): KeyError: 'a'"


def test_progress_counts_pngs_in_the_progress_folder_and_tqdm_counters(jobs, tmp_path):
    out, release = tmp_path / "frames", tmp_path / "go"
    script = tmp_path / "work.py"
    script.write_text(
        "import pathlib, sys, time\n"
        "d = pathlib.Path(sys.argv[1]); d.mkdir()\n"
        "for i in range(3): (d / f'{i}.png').write_bytes(b'')\n"
        "sys.stderr.write(' 10%|#   | 2/20 [00:01<00:09]\\r 50%|##  | 10/20 [00:02<00:02]'); sys.stderr.flush()\n"
        "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.02)\n")

    def reach(job, value):
        deadline = time.monotonic() + 20
        while job.progress() < value:
            assert time.monotonic() < deadline, f"progress stuck at {job.progress()}"
            time.sleep(0.02)

    job = jobs.submit([Step("count", [PY, str(script), str(out), str(release)], total=4, progress_dir=out)],
                      tmp_path / "l")
    reach(job, 0.75)
    assert job.progress() == pytest.approx(0.75) and job.describe() == "count: 75%"  # 3 of 4 PNGs
    release.write_text("")
    assert jobs.wait(job.id, timeout=20).progress() == 1.0
    release.unlink()
    job = jobs.submit([Step("one", _py("pass")), Step("tqdm", [PY, str(script), str(tmp_path / "f2"), str(release)],
                                                      total=20)], tmp_path / "l2")
    reach(job, 0.75)
    assert job.progress() == pytest.approx(0.75)  # step 2 of 2 at tqdm's 10/20
    release.write_text("")
    jobs.wait(job.id, timeout=20)


def test_progress_never_goes_back_when_a_step_starts_another_bar(tmp_path):
    job = Job(id=1, steps=[Step("tracking", ["x"], total=10)], log_dir=tmp_path, state="running")
    job.log(0).write_text("flows: 80%|####  | 8/10 [00:01<00:00]")
    assert job.progress() == pytest.approx(0.8)
    job.log(0).write_text("flows: 100%| 10/10 [00:01<00:00]\rforward:  10%|#   | 1/10 [00:00<00:05]")
    assert job.progress() == pytest.approx(0.8)  # a second bar starting over does not pull the page back
    job.log(0).write_text("forward:  90%|#   | 9/10 [00:00<00:05]")
    assert job.progress() == pytest.approx(0.9)


# ---- uploads and session folders ----

def test_upload_suffix_accepts_videos_and_zips_only():
    assert upload_suffix("My Clip.MP4") == ".mp4"
    assert upload_suffix("..\\..\\x.zip") == ".zip"
    for bad in ("evil.exe", "frames.tar", "noext", "x.mp4.sh"):
        with pytest.raises(InputError, match="unsupported upload"):
            upload_suffix(bad)


@pytest.mark.parametrize("member, why", [("../evil.png", "'..'"), ("a/../../evil.png", "'..'"),
                                          ("/tmp/evil.png", "absolute"), ("C:/evil.png", "absolute"),
                                          ("..\\evil.png", "'..'")])
def test_zip_slip_members_reject_the_whole_zip(tmp_path, member, why):
    archive = _zip(tmp_path / "x.zip", {"ok/00000.png": _png(_frames(1)[0]), member: b"x"})
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(InputError, match=why):
        extract_frames_zip(archive, dest)
    assert not dest.exists() and not (tmp_path / "evil.png").exists() and not (tmp_path / "deep" / "evil.png").exists()


def test_zip_symlink_member_is_rejected(tmp_path):
    info = zipfile.ZipInfo("link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "l.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="symbolic link"):
        extract_frames_zip(tmp_path / "l.zip", tmp_path / "d")


def test_zip_frames_extract_in_natural_order_under_generated_names(tmp_path):
    frames = _frames(3)
    archive = _zip(tmp_path / "f.zip", {"clip/f10.png": _png(frames[2]), "clip/f2.png": _png(frames[1]),
                                        "clip/f1.png": _png(frames[0]), "__MACOSX/clip/._f1.png": b"junk",
                                        "clip/notes.txt": b"hi"})
    written = extract_frames_zip(archive, tmp_path / "d")
    assert [p.name for p in written] == ["00000.png", "00001.png", "00002.png"]
    np.testing.assert_array_equal(load_video(tmp_path / "d").frames, frames)
    with pytest.raises(InputError, match="no jpg/jpeg/png frames"):
        extract_frames_zip(_zip(tmp_path / "e.zip", {"a.txt": b"x"}), tmp_path / "e")
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(InputError, match="not a readable zip"):
        extract_frames_zip(tmp_path / "bad.zip", tmp_path / "b")


def test_session_imports_video_and_zip_under_generated_names_only(tmp_path):
    store = SessionStore(tmp_path / "work")
    s = store.get("abc")
    assert s.folder.parent == store.root and s.folder.name == "session-0"
    upload = tmp_path / "upload.bin"  # where the web server put the browser's file
    yy, xx = np.mgrid[0:32, 0:48]
    frames = np.stack([np.stack([xx * 5, yy * 7, np.full_like(xx, 40 * t)], -1) for t in range(5)]).astype(np.uint8)
    write_video(tmp_path / "v.mp4", frames, fps=12)  # smooth frames: the lossy mp4 keeps them close
    upload.write_bytes((tmp_path / "v.mp4").read_bytes())
    out = s.import_video(upload, client_name="../../../escape/My Clip.MOV")
    assert out.parent == s.folder and s.num_frames == 5 and s.size == (32, 48) and s.fps == 12
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(5)]
    assert not (tmp_path / "escape").exists() and not any("Clip" in p.name for p in tmp_path.rglob("*"))
    assert np.abs(s.frame(2).astype(int) - frames[2]).mean() < 4
    frames = _frames(2)
    zip_upload = _zip(tmp_path / "z", {"x/1.png": _png(frames[0]), "x/2.png": _png(frames[1])})
    s.import_video(zip_upload, client_name="frames.zip")
    assert s.num_frames == 2 and s.fps == 24.0
    np.testing.assert_array_equal(s.frame(1), frames[1])
    np.testing.assert_array_equal(s.frame(99), frames[1])  # clamped
    (tmp_path / "text").write_text("not a video")
    with pytest.raises(InputError, match="cannot be read") as err:
        s.import_video(tmp_path / "text", client_name="clip.mp4")
    assert "\n" not in str(err.value)
    assert s.num_frames == 2  # the previous clip stays loaded
    assert all(p.name.split("-")[0] in ("frames", "zip", "upload") for p in s.folder.iterdir())


def test_session_folders_are_removed_on_close_and_exit_and_nothing_else(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("user file")
    store = SessionStore(work)
    a, b = store.get("a"), store.get("b")
    assert store.get("a") is a and a.folder != b.folder
    (a.folder / "x").write_text("1")
    store.close("a")
    assert not a.folder.exists() and b.folder.exists() and "a" not in store
    store.close_all()
    assert not store.root.exists() and (work / "keep.txt").read_text() == "user file"


# ---- annotations and commands ----

def test_boxes_from_clicks_and_fields_and_brush_masks():
    assert box_from_clicks((30, 5), (10, 20)) == (10, 5, 21, 16)
    m = box_annotation((10, 5, 21, 16), (32, 48))
    assert m.sum() == 21 * 16 and m[5, 10] and m[20, 30] and not m[21, 30] and not m[20, 31]
    assert box_annotation((-5, -5, 10, 10), (32, 48)).sum() == 25  # clipped to the frame
    for bad in ((0, 0, 0, 5), (60, 0, 5, 5), (0, 0, -3, 4)):
        with pytest.raises(InputError, match="covers no pixel"):
            box_annotation(bad, (32, 48))
    layer = np.zeros((32, 48, 4), np.uint8)
    layer[3:6, 7:9, 3] = 255
    small = np.zeros((16, 24, 4), np.uint8)
    small[0, 0, 3] = 200  # a layer at half size is scaled to the frame
    m = brush_annotation({"background": None, "layers": [layer, small], "composite": None}, (32, 48))
    assert m.sum() == 6 + 4 and m[3:6, 7:9].all() and m[:2, :2].all()
    for empty in (None, {"layers": []}, {"layers": [np.zeros((32, 48, 4), np.uint8)]}):
        with pytest.raises(InputError, match="nothing is brushed"):
            brush_annotation(empty, (32, 48))


def test_clicked_corner_pixels_are_both_inside_the_box():
    """README's box: clicks on pixels (210, 0) and (345, 99) of the demo frame give 210,0,136,100."""
    size = (240, 432)
    first, second = clicked_pixel("210,0", [211, 1], size), clicked_pixel("345,99", [344, 98], size)
    assert (first, second) == ((210, 0), (345, 99))  # the pixel under the pointer, not Gradio's rounded index
    assert box_from_clicks(first, second) == box_from_clicks(second, first) == (210, 0, 136, 100)
    assert clicked_pixel("", [211, 1], size) == (211, 1)  # no pointer reading: Gradio's index
    assert clicked_pixel(None, (5, 6), size) == (5, 6)
    assert clicked_pixel("432,-1", [0, 0], size) == (431, 0)  # a pointer on the picture's edge stays in the frame


def test_progress_shows_over_the_video_it_fills_not_over_the_status_line_and_downloads(tmp_path):
    """Run's and Preview's progress overlay covers the result / masks video only: status and downloads stay readable;
    the frame picture's clicks go through the page's pointer reading (POINTER_JS)."""
    from fffvdi.app.ui import build_ui

    store, queue = SessionStore(tmp_path / "work"), JobQueue()
    try:
        config = build_ui(store, queue).get_config_file()
    finally:
        queue.shutdown()
        store.close_all()
    names = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    events = {(names.get(d["targets"][0][0]), d["targets"][0][1]): d for d in config["dependencies"] if d["targets"]}
    for button, video in (("run", "result-video"), ("track", "masks-video")):
        event = events[(button, "click")]
        assert "status" in [names[i] for i in event["outputs"]]
        assert [names[i] for i in event["show_progress_on"] or []] == [video], button
    select = events[("frame-image", "select")]
    assert select["js"] and "fffvdiPointer" in select["js"] and len(select["inputs"]) == 2


def test_run_settings_are_checked_and_mapped_onto_inference_flags(tmp_path):
    for bad, match in ((RunSettings(method="magic"), "method"), (RunSettings(steps=0), "steps"),
                       (RunSettings(dilation=-1), "dilation"), (RunSettings(window_frames=1.5), "window frames"),
                       (RunSettings(method="fffvdi"), "needs a checkpoint")):
        with pytest.raises(InputError, match=match):
            bad.check()
    s = RunSettings("fffvdi", " /ck/unet ", "org/svd", 7, 3, 2, 14)
    s.check()
    step = inference_step(tmp_path / "f", tmp_path / "m", tmp_path / "out", 12.5, 9, s)
    a = step.argv
    assert a[a.index("--method") + 1] == "fffvdi" and a[a.index("--checkpoint") + 1] == "/ck/unet"
    assert a[a.index("--video") + 1] == str(tmp_path / "f") and a[a.index("--mask") + 1] == str(tmp_path / "m")
    assert a[a.index("--fps") + 1] == "12.5" and a[a.index("--output") + 1] == str(tmp_path / "out")
    assert {"sampling.num_steps=7", "sampling.seed=3", "mask.dilate=2", "window.num_frames=14",
            "model.pretrained=org/svd"} <= set(a)
    assert step.progress_dir == tmp_path / "out.partial" / "frames" and step.total == 9
    assert "--checkpoint" not in inference_step(tmp_path, tmp_path, tmp_path / "o", 24, 1, RunSettings()).argv


def test_tracking_step_runs_make_masks_through_the_queue(jobs, tmp_path):
    frames = _frames(4, 48, 64)
    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / "frames" / f"{i:05d}.png"), f[..., ::-1])
    box = box_annotation((20, 10, 16, 12), (48, 64))
    save_annotation(box, tmp_path / "ann.png")
    out = tmp_path / "masks"
    step = tracking_step(tmp_path / "frames", tmp_path / "ann.png", 2, out, 12, 4)
    assert "make_masks.py" in step.argv[1] and step.total == 4
    flags = dict(zip(step.argv[2::2], step.argv[3::2]))
    assert flags == {"--video": str(tmp_path / "frames"), "--mask-image": str(tmp_path / "ann.png"), "--frame": "2",
                     "--output": str(out), "--fps": "12"}
    job = jobs.wait(jobs.submit([step], tmp_path / "log").id, timeout=120)
    assert job.state == DONE, job.log(0).read_text()[-2000:]
    masks = load_video(out, 12.0)  # the masks in the frames' names, annotated frame covering its box
    assert list(masks.names) == [f"{i:05d}.png" for i in range(4)]
    assert (masks.frames[2, ..., 0] > 127)[box].mean() > 0.5
    assert load_video(out / "masks_preview.mp4").frames.shape == frames.shape
    save_annotation(np.zeros((48, 64), bool), tmp_path / "empty.png")
    step = tracking_step(tmp_path / "frames", tmp_path / "empty.png", 0, tmp_path / "m2", 12, 4)
    job = jobs.wait(jobs.submit([step], tmp_path / "log2").id, timeout=120)
    assert job.state == FAILED and "is empty" in job.message and "\n" not in job.message, job.message


def test_inference_through_the_queue_result_zip_and_model_missing_error(jobs, tmp_path):
    frames = _frames(6, 48, 64)
    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / "frames" / f"{i:05d}.png"), f[..., ::-1])
    save_annotation(box_annotation((20, 10, 16, 12), (48, 64)), tmp_path / "mask.png")
    env_ok = os.environ.get("OMP_NUM_THREADS")
    out = tmp_path / "result"
    step = inference_step(tmp_path / "frames", tmp_path / "mask.png", out, 12, 6, RunSettings("telea", dilation=1))
    job = jobs.wait(jobs.submit([step], tmp_path / "log").id, timeout=120)
    assert job.state == DONE, job.log(0).read_text()[-2000:]
    result = load_video(out / "inpainted.mp4")
    assert result.frames.shape == frames.shape and result.fps == 12
    archive = zip_frames(out / "frames", tmp_path / "frames.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == [f"{i:05d}.png" for i in range(6)]
    bad = RunSettings("fffvdi", checkpoint=str(tmp_path / "no_such_unet"), pretrained=str(tmp_path / "no_such_svd"))
    step = inference_step(tmp_path / "frames", tmp_path / "mask.png", tmp_path / "r2", 12, 6, bad)
    job = jobs.wait(jobs.submit([step], tmp_path / "log2").id, timeout=120)
    assert job.state == FAILED and "no_such_" in job.message and "\n" not in job.message, job.message
    assert env_ok == os.environ.get("OMP_NUM_THREADS")


def test_app_on_a_taken_port_is_a_one_line_error_and_leaves_no_files(tmp_path):
    import socket
    import subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run([PY, str(Path(__file__).resolve().parents[1] / "scripts" / "app.py"), "--port", str(port),
                              "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=180)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and lines[0].endswith("pass another --port")
    assert not any((tmp_path / "work").iterdir())  # the session root was removed on the way out
