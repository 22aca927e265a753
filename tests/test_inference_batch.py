"""scripts/inference.py over many videos (--video-list, parent folders, accelerate-launched shards), `method: auto`,
and masks tracked from one annotation (--box / --mask-frame)."""
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import load_script
from synthetic_video import translating_frames

ROOT = Path(__file__).resolve().parents[1]
CLI = load_script("inference")
H, W, F = 64, 96, 5


@pytest.fixture(autouse=True)
def _fresh_partial_state():
    """A batch creates accelerate's PartialState singleton: reset it so it never leaks into other tests."""
    from accelerate import PartialState

    yield
    PartialState._reset_state()


def _frames(seed: int, n: int = F) -> np.ndarray:
    return translating_frames((2, 1), n, size=(H, W), seed=seed)  # uint8 [n, H, W, 3]


def _box_masks(n: int = F, h: int = H, w: int = W) -> np.ndarray:
    masks = np.zeros((n, h, w), np.uint8)
    for t in range(n):
        masks[t, h // 4 : h // 2, w // 4 + 2 * t : w // 2 + 2 * t] = 255
    return masks


def _write_pngs(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"{i:05d}.png"), img[..., ::-1] if img.ndim == 3 else img)
    return folder


def _parents(root: Path) -> tuple[Path, Path]:
    """videos/ with a frames folder `a`, a frames folder `b` and a video file `c.mp4`; masks/ with a folder `a`,
    one image `b.png` for all frames and a folder `c`."""
    from fffvdi.io import write_video

    videos, masks = root / "videos", root / "masks"
    _write_pngs(videos / "a", _frames(1))
    _write_pngs(videos / "b", _frames(2))
    write_video(videos / "c.mp4", _frames(3), fps=10)
    _write_pngs(masks / "a", _box_masks())
    cv2.imwrite(str(masks / "b.png"), _box_masks()[2])
    _write_pngs(masks / "c", _box_masks())
    (videos / "notes.txt").write_text("not a video: ignored")
    return videos, masks


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def _one_error(capsys, code: int) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1, (code, err)
    return err[0]


def test_auto_is_propagate_without_a_checkpoint_and_says_how_to_get_diffusion(tmp_path, monkeypatch, caplog):
    _write_pngs(tmp_path / "demo" / "frames", _frames(0))
    _write_pngs(tmp_path / "demo" / "masks", _box_masks())
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert CLI.main(["--video", "demo/frames", "--mask", "demo/masks"]) == 0
    out = tmp_path / "results" / "demo-propagate"  # the folder names the resolved method, not "auto"
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "propagate"
    assert len(_pngs(out / "frames")) == F
    notice = [r.getMessage() for r in caplog.records if "method auto -> propagate" in r.getMessage()]
    assert len(notice) == 1 and "\n" not in notice[0]
    assert all(s in notice[0] for s in ("--checkpoint", "licence", "huggingface-cli login", "model.pretrained=DIR"))


def test_auto_with_a_checkpoint_is_fffvdi_and_an_uncached_gated_model_says_licence_and_login(tmp_path, capsys):
    from fffvdi.config import load_config
    from fffvdi.inpaint.config import InferenceConfig, resolve_method

    cfg = load_config(InferenceConfig, None, ["model.checkpoint=somewhere/unet"])
    assert cfg.method == "auto" and resolve_method(cfg) == "fffvdi" and cfg.method == "fffvdi"
    cfg = load_config(InferenceConfig, None, ["method=telea"])
    assert resolve_method(cfg) == "telea"  # an explicit method is kept
    video = _write_pngs(tmp_path / "v" / "frames", _frames(0))
    mask = _write_pngs(tmp_path / "v" / "masks", _box_masks())
    ckpt = tmp_path / "ckpt" / "unet"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    out = tmp_path / "o"
    code = CLI.main(["--video", str(video), "--mask", str(mask), "--checkpoint", str(ckpt), "--output", str(out),
                     "model.pretrained=someorg/not-cached-svd"])  # HF_HUB_OFFLINE=1 (conftest)
    err = _one_error(capsys, code)
    assert "someorg/not-cached-svd" in err and "not in the local cache" in err  # fffvdi was chosen: it loads SVD
    assert "accept its licence" in err and "huggingface-cli login" in err and "model.pretrained=DIR" in err
    assert not out.exists() and not (tmp_path / "o.partial").exists()


def test_parent_folders_one_model_load_own_folders_and_summary(tmp_path, capsys, monkeypatch):
    import fffvdi.inpaint.methods

    videos, masks = _parents(tmp_path)
    built = []
    real = fffvdi.inpaint.methods.build_method
    monkeypatch.setattr(fffvdi.inpaint.methods, "build_method", lambda cfg: built.append(cfg.method) or real(cfg))
    out = tmp_path / "out"
    assert CLI.main(["--video", str(videos), "--mask", str(masks), "--method", "telea", "--output", str(out)]) == 0
    assert built == ["telea"]  # one model (method) for every video
    assert "videos: 3 done, 0 failed, 0 skipped" in capsys.readouterr().out
    for name in "abc":
        assert len(_pngs(out / name / "frames")) == F and (out / name / "inpainted.mp4").is_file()
        assert yaml.safe_load((out / name / "config.yaml").read_text())["output"]["dir"] == str(out / name)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 3, "failed": 0, "skipped": 0} and summary["processes"] == 1
    assert [v["name"] for v in summary["videos"]] == ["a", "b", "c"]
    assert [Path(v["mask"]).name for v in summary["videos"]] == ["a", "b.png", "c"]
    # the same frames as a one-video run
    assert CLI.main(["--video", str(videos / "b"), "--mask", str(masks / "b.png"), "--method", "telea",
                     "--output", str(tmp_path / "single")]) == 0
    assert _pngs(out / "b" / "frames") == _pngs(tmp_path / "single" / "frames")
    # a rerun keeps finished results and builds nothing; --overwrite redoes them
    built.clear()
    capsys.readouterr()
    assert CLI.main(["--video", str(videos), "--mask", str(masks), "--method", "telea", "--output", str(out)]) == 0
    assert built == [] and "videos: 0 done, 0 failed, 3 skipped" in capsys.readouterr().out
    assert CLI.main(["--video", str(videos), "--mask", str(masks), "--method", "telea", "--output", str(out),
                     "--overwrite"]) == 0
    assert built == ["telea"] and "videos: 3 done" in capsys.readouterr().out


def test_diffusion_pipeline_reused_across_videos_gives_each_its_single_run_frames(tmp_path, tiny_svd_dir, capsys):
    """One FFF-VDI pipeline for both videos: nothing carries over from the first video into the second."""
    import warnings

    videos, masks = tmp_path / "videos", tmp_path / "masks"
    for name, seed in (("p", 1), ("q", 2)):
        _write_pngs(videos / name, _frames(seed, 4))
        _write_pngs(masks / name, _box_masks(4))
    tiny = ["--config", str(ROOT / "configs" / "inference_tiny.yaml"), f"model.pretrained={tiny_svd_dir}",
            "sampling.num_steps=2", "window.height=64", "window.width=64", "window.num_frames=4", "window.overlap=1",
            "output.save_comparison=false", "output.save_masked_input=false"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no checkpoint: the base UNet
        assert CLI.main(["--video", str(videos), "--mask", str(masks), "--output", str(tmp_path / "b"), *tiny]) == 0
        assert CLI.main(["--video", str(videos / "q"), "--mask", str(masks / "q"), "--output", str(tmp_path / "q"),
                         *tiny]) == 0
    assert _pngs(tmp_path / "b" / "q" / "frames") == _pngs(tmp_path / "q" / "frames")
    assert _pngs(tmp_path / "b" / "p" / "frames") != _pngs(tmp_path / "b" / "q" / "frames")
    assert yaml.safe_load((tmp_path / "b" / "q" / "config.yaml").read_text())["method"] == "fffvdi"


def test_a_failing_video_is_reported_and_the_rest_go_on(tmp_path, capsys):
    videos, masks = _parents(tmp_path)
    cv2.imwrite(str(masks / "b.png"), np.zeros((50, 50), np.uint8))  # another aspect ratio: b fails its check
    out = tmp_path / "out"
    code = CLI.main(["--video", str(videos), "--mask", str(masks), "--method", "propagate", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # the number of failed videos
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: b: mask ") and "another aspect ratio" in errors[0]
    assert "videos: 2 done, 1 failed, 0 skipped" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["a", "c", "summary.json"]  # nothing half-made for b
    summary = json.loads((out / "summary.json").read_text())
    status = {v["name"]: (v["status"], v["message"]) for v in summary["videos"]}
    assert status["a"] == ("done", "") and status["c"] == ("done", "") and status["b"][0] == "failed"
    assert "another aspect ratio" in status["b"][1]
    # a rerun skips finished videos; a leftover unfinished folder needs --resume or --overwrite, as for one video
    import shutil

    shutil.move(out / "c", out / "c.partial")
    code = CLI.main(["--video", str(videos), "--mask", str(masks), "--method", "propagate", "--output", str(out)])
    assert code == 2 and "videos: 0 done, 2 failed, 1 skipped" in capsys.readouterr().out
    status = {v["name"]: (v["status"], v["message"]) for v in json.loads((out / "summary.json").read_text())["videos"]}
    assert status["a"][0] == "skipped" and "unfinished output" in status["c"][1] and "--resume" in status["c"][1]


def test_a_video_without_a_mask_is_an_error_up_front(tmp_path, capsys, monkeypatch):
    import fffvdi.inpaint.methods

    videos, masks = _parents(tmp_path)
    _write_pngs(videos / "d", _frames(4))
    _write_pngs(videos / "e", _frames(5))
    cv2.imwrite(str(masks / "a.png"), _box_masks()[0])  # a/ and a.png: ambiguous
    monkeypatch.setattr(fffvdi.inpaint.methods, "build_method", lambda cfg: pytest.fail("no model before the error"))
    out = tmp_path / "out"
    err = _one_error(capsys, CLI.main(["--video", str(videos), "--mask", str(masks), "--output", str(out)]))
    assert "3 videos in" in err and "a: several masks (a, a.png)" in err and "d: no d/ or d.*" in err and "e: no e/" in err
    assert not out.exists()
    err = _one_error(capsys, CLI.main(["--video", str(videos), "--mask", str(masks / "b.png"), "--output", str(out)]))
    assert "--mask must be a folder" in err and not out.exists()


def test_video_list_relative_paths_comments_and_outputs(tmp_path, capsys):
    videos, masks = _parents(tmp_path)
    lst = tmp_path / "lists" / "clips.txt"
    lst.parent.mkdir()
    lst.write_text("# video mask [output]\n\n../videos/a ../masks/a   first  # trailing comment\n"
                   f"{videos / 'c.mp4'} ../masks/c\n")
    out = tmp_path / "out"
    assert CLI.main(["--video-list", str(lst), "--method", "telea", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["c", "first", "summary.json"]
    assert len(_pngs(out / "first" / "frames")) == F and len(_pngs(out / "c" / "frames")) == F
    # default output: results/<list name>-<resolved method>/
    # problems in the list are named up front, by line, and nothing is written
    lst.write_text("../videos/a ../masks/a\nonly-one-field\n../videos/zz ../masks/a\n../videos/b ../masks/b.png x y\n")
    err = _one_error(capsys, CLI.main(["--video-list", str(lst), "--method", "telea", "--output", str(tmp_path / "o2")]))
    assert "3 problems in --video-list" in err and "line 2: 1 fields" in err and "line 3: video" in err
    assert "line 4: 4 fields" in err and not (tmp_path / "o2").exists()
    err = _one_error(capsys, CLI.main(["--video-list", str(lst), "--video", str(videos / "a"), "--output", str(tmp_path / "o2")]))
    assert "drop --video/--mask or the list" in err
    lst.write_text("../videos/a ../masks/a same\n../videos/b ../masks/b.png same\n")
    err = _one_error(capsys, CLI.main(["--video-list", str(lst), "--method", "telea", "--output", str(tmp_path / "o2")]))
    assert "would both write" in err and "third column OUTPUT" in err


def test_a_model_that_fails_to_load_is_tried_once_and_ctrl_c_stops_the_batch(tmp_path, capsys, monkeypatch):
    import fffvdi.inpaint.methods
    from fffvdi.inpaint.batch import Outcome, exit_status
    from fffvdi.errors import ModelLoadError

    videos, masks = _parents(tmp_path)
    calls = []

    def broken(cfg):
        calls.append(cfg.method)
        raise ModelLoadError("could not load the model; pass model.pretrained=DIR")

    monkeypatch.setattr(fffvdi.inpaint.methods, "build_method", broken)
    args = ["--video", str(videos), "--mask", str(masks), "--method", "telea"]
    assert CLI.main([*args, "--output", str(tmp_path / "o")]) == 3  # every video failed, one load attempt
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert calls == ["telea"] and len(err) == 3 and all("could not load the model" in line for line in err)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["summary.json"]  # no half-made video folder

    def interrupted(read_frames, read_masks, total, sink, **kwargs):
        raise KeyboardInterrupt

    interrupted.resumable = False
    monkeypatch.setattr(fffvdi.inpaint.methods, "build_method", lambda cfg: interrupted)
    assert CLI.main([*args, "--output", str(tmp_path / "i")]) == 130  # not "video a failed, go on with b"
    assert "interrupted" in capsys.readouterr().err and not (tmp_path / "i" / "b").exists()
    failed = [Outcome("v", "v", "m", "o", "failed")] * 150
    assert exit_status(failed) == 100 and exit_status([Outcome("v", "v", "m", "o", "done")]) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_frames_of_one_process(tmp_path, capsys):
    """accelerate launch, 2 CPU processes (gloo): video i on process i % 2, byte-identical frames, a failure reported."""
    videos, masks = _parents(tmp_path)
    _write_pngs(videos / "d", _frames(4))
    _write_pngs(masks / "d", _box_masks(F, 40, 40))  # another aspect: d fails, on process 1
    args = ["--video", str(videos), "--mask", str(masks), "--method", "propagate"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(ROOT / "scripts" / "inference.py"),
           *args, "--output", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stderr[-3000:]  # one video failed (the launcher reports a failed process)
    assert "videos: 3 done, 1 failed, 0 skipped" in proc.stdout and proc.stdout.count("videos:") == 1, proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: d: mask "), proc.stderr[-3000:]
    assert CLI.main([*args, "--output", str(tmp_path / "one")]) == 1
    capsys.readouterr()
    two, one = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("two", "one"))
    assert two["processes"] == 2 and one["processes"] == 1 and two["counts"] == one["counts"]
    assert [(v["name"], v["rank"], v["status"]) for v in two["videos"]] == \
           [("a", 0, "done"), ("b", 1, "done"), ("c", 0, "done"), ("d", 1, "failed")]
    for name in "abc":
        frames = _pngs(tmp_path / "two" / name / "frames")
        assert len(frames) == F and frames == _pngs(tmp_path / "one" / name / "frames")


def _object_clip(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A textured 18x18 square moving (3, 1) px/frame over a panning texture: frames uint8 [n, H, W, 3], the
    object's true masks bool [n, H, W]."""
    frames = _frames(7, n).copy()
    rng = np.random.default_rng(3)
    patch = cv2.resize(rng.uniform(120, 255, (6, 6, 3)), (18, 18), interpolation=cv2.INTER_NEAREST).astype(np.uint8)
    objects = np.zeros((n, H, W), bool)
    for t in range(n):
        x, y = 20 + 3 * t, 20 + t
        frames[t, y : y + 18, x : x + 18] = patch
        objects[t, y : y + 18, x : x + 18] = True
    return frames, objects


def test_box_on_one_frame_is_tracked_saved_beside_the_result_and_used_as_the_mask(tmp_path, capsys):
    from fffvdi.io import dilate_mask

    frames, objects = _object_clip()
    video = _write_pngs(tmp_path / "clip" / "frames", frames)
    out = tmp_path / "out"
    args = ["--video", str(video), "--box", "24,20,26,24", "--mask-frame", "2", "--method", "telea", "--output", str(out)]
    assert CLI.main(args) == 0  # the box of frame 2 (object at x 26..43, y 22..39) with some background
    tracked = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in sorted((out / "masks").glob("*.png"))])
    assert tracked.shape == objects.shape and (out / "masks" / "masks_preview.mp4").is_file()
    for t in range(len(frames)):  # the object is hidden on every frame, by masks not much larger than it
        assert (tracked[t] & objects[t]).sum() >= 0.95 * objects[t].sum(), t
        assert tracked[t].sum() <= 2.5 * objects[t].sum(), t
    result = np.stack([cv2.imread(str(p))[..., ::-1] for p in sorted((out / "frames").glob("*.png"))])
    dilate = yaml.safe_load((out / "config.yaml").read_text())["mask"]["dilate"]
    for t in range(len(frames)):  # the tracked masks are what was inpainted: the rest is the input, bit for bit
        hole = dilate_mask(tracked[t].astype(np.uint8), dilate) > 0
        assert np.array_equal(result[t][~hole], frames[t][~hole])
        assert not np.array_equal(result[t][hole], frames[t][hole])
    # --overwrite replaces a result holding masks/; a one-image annotation (--mask with --mask-frame) works alike
    ann = tmp_path / "ann.png"
    cv2.imwrite(str(ann), objects[4].astype(np.uint8) * 255)
    assert CLI.main(["--video", str(video), "--mask", str(ann), "--mask-frame", "4", "--method", "telea",
                     "--output", str(out), "--overwrite"]) == 0
    again = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in sorted((out / "masks").glob("*.png"))])
    assert all((again[t] & objects[t]).sum() >= 0.95 * objects[t].sum() for t in range(len(frames)))


def test_an_interrupted_annotated_run_resumes_with_its_tracked_masks(tmp_path, capsys, monkeypatch):
    import fffvdi.tracking.inputs
    from fffvdi.io.output import VideoWriter

    frames, _ = _object_clip(8)
    video = _write_pngs(tmp_path / "clip" / "frames", frames)
    args = ["--video", str(video), "--box", "18,18,24,24", "--method", "telea", "window.num_frames=4",
            "window.overlap=2"]
    real, calls = VideoWriter.write, []

    def write(self, batch, names):  # Ctrl-C in the second window
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        real(self, batch, names)

    with monkeypatch.context() as m:
        m.setattr(VideoWriter, "write", write)
        assert CLI.main([*args, "--output", str(tmp_path / "out")]) == 130
    kept = _pngs(tmp_path / "out.partial" / "masks")
    assert len(kept) == 8
    err = _one_error(capsys, CLI.main([*args[:3], "18,18,24,25", *args[4:], "--output", str(tmp_path / "out"),
                                       "--resume"]))
    assert "annotation.box=[18, 18, 24, 24], now [18, 18, 24, 25]" in err  # another annotation is another run
    monkeypatch.setattr(fffvdi.tracking.inputs, "track_masks", lambda *a, **k: pytest.fail("the tracked masks are kept"))
    assert CLI.main([*args, "--output", str(tmp_path / "out"), "--resume"]) == 0
    assert _pngs(tmp_path / "out" / "masks") == kept
    # the frames of an uninterrupted run on those masks, bit for bit
    assert CLI.main(["--video", str(video), "--mask", str(tmp_path / "out" / "masks"), *args[4:],
                     "--output", str(tmp_path / "ref")]) == 0
    assert _pngs(tmp_path / "out" / "frames") == _pngs(tmp_path / "ref" / "frames")


def test_bad_annotations_fail_in_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import fffvdi.inpaint.methods
    import fffvdi.tracking.inputs

    frames, _ = _object_clip()
    video = _write_pngs(tmp_path / "clip" / "frames", frames)
    videos, masks = _parents(tmp_path)
    monkeypatch.setattr(fffvdi.inpaint.methods, "build_method", lambda cfg: pytest.fail("no model before the error"))
    monkeypatch.setattr(fffvdi.tracking.inputs, "track_masks", lambda *a, **k: pytest.fail("no tracking before the error"))
    out = tmp_path / "out"
    base = ["--video", str(video), "--method", "telea", "--output", str(out)]
    for extra, needle in (
        (["--box", "1,2,3"], "--box '1,2,3' is not x,y,w,h"),
        (["--box", "10,10,5,5", "--mask-frame", "6"], "--mask-frame 6 is past the last frame"),
        (["--box", "10,10,5,5", "--mask-frame", "-1"], "--mask-frame -1 is negative"),
        (["--box", "200,10,5,5"], "lies outside"),
        (["--box", "10,10,5,5", "--mask", str(tmp_path / "x.png")], "either --box or --mask"),
        (["--mask-frame", "1"], "pass --video with --mask MASKS (or --box x,y,w,h, or --mask ONE.png --mask-frame K)"),
        (["--mask", str(video), "--mask-frame", "1"], "--mask-frame 1 needs --mask ONE_IMAGE"),
        (["--box", "10,10,5,5", "--tracker", "magic"], "--tracker 'magic' is unknown"),
    ):
        err = _one_error(capsys, CLI.main([*base, *extra]))
        assert needle in err, (extra, err)
        assert not out.exists() and not (tmp_path / "out.partial").exists()
    err = _one_error(capsys, CLI.main(["--video", str(videos), "--box", "1,1,4,4", "--output", str(out)]))
    assert "--box/--mask-frame annotate one video" in err and not out.exists()
    monkeypatch.setenv("WORLD_SIZE", "2")  # accelerate launch on one video: the processes would share its folder
    err = _one_error(capsys, CLI.main([*base, "--box", "10,10,5,5"]))
    assert "one video runs in one process" in err and not out.exists()
