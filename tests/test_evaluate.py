"""Evaluation harness: protocol masks, compositing, metric oracles, both modes, resume, output files, errors."""
import csv
import json
import math
import re

import cv2
import numpy as np
import pytest
import torch

from fffvdi.data.synthetic import render_video
from fffvdi.errors import FFFVDIError, InputError
from fffvdi.evaluation import EvalSettings, load_eval_video, run_evaluation
from fffvdi.evaluation import harness
from fffvdi.metrics import psnr

H, W, F = 72, 128, 6  # SSIM's 65-pixel window needs sides >= 65


@pytest.fixture(autouse=True)
def _fresh_partial_state():
    """run_evaluation creates accelerate's PartialState singleton: reset it so it never leaks into other tests."""
    from accelerate import PartialState

    yield
    PartialState._reset_state()


def _write_rgb(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


@pytest.fixture
def dataset(tmp_path):
    """Two videos (PNG frames, so ground truth is exact) with a moving and a stationary test mask."""
    root = tmp_path / "davis"
    for v in range(2):
        frames, _, _ = render_video(F, H, W, np.random.default_rng(v))
        for t in range(F):
            _write_rgb(root / "JPEGImages" / f"vid{v}" / f"{t:05d}.png", frames[t])
            mask = np.zeros((H, W), np.uint8)
            x0 = 20 + 4 * t if v == 0 else 50
            mask[20:40, x0 : x0 + 24] = 255
            (root / "test_masks" / f"vid{v}").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "test_masks" / f"vid{v}" / f"{t:05d}.png"), mask)
    return root


def _settings(root, out, **kw):
    return EvalSettings(dataset_root=str(root), output=str(out), size=(W, H), progress=False, **kw)


def _cli_main():
    """scripts/evaluate.py's main, loaded by path (scripts/ is not a package)."""
    from conftest import load_script

    return load_script("evaluate").main


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_protocol_masks_and_resize(tmp_path):
    root = tmp_path / "ds"
    frame = np.random.default_rng(0).integers(0, 256, (2 * H, 2 * W, 3), dtype=np.uint8)
    _write_rgb(root / "JPEGImages" / "a" / "00000.png", frame)
    mask = np.zeros((2 * H, 2 * W), np.uint8)
    mask[60:62, 120:122] = 1  # value 1: binarised with > 0, not > 127; one pixel after 2x nearest downsizing
    (root / "test_masks" / "a").mkdir(parents=True)
    cv2.imwrite(str(root / "test_masks" / "a" / "00000.png"), mask)
    video = load_eval_video(root, "a", size=(W, H), dilate=4)
    assert video.frames.shape == (1, H, W, 3) and video.masks.shape == (1, H, W)
    np.testing.assert_array_equal(video.frames[0], cv2.resize(frame, (W, H), interpolation=cv2.INTER_LINEAR))
    ys, xs = np.nonzero(video.masks[0])
    assert len(ys) == 41  # 3x3 cross dilated 4 times = L1 ball of radius 4: 2*4*5 + 1 pixels
    assert (np.abs(ys - 30) + np.abs(xs - 60)).max() == 4


def test_results_equal_gt_inside_mask_noise_outside(dataset, tmp_path):
    """Results equal to the GT in the hole and garbage outside: compositing makes them the GT exactly."""
    rng = np.random.default_rng(1)
    for v in ("vid0", "vid1"):
        video = load_eval_video(dataset, v, (W, H))
        for t, name in enumerate(video.frame_names):
            noisy = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            out = np.where(video.masks[t][..., None] > 0, video.frames[t], noisy)
            _write_rgb(tmp_path / "res" / v / name.replace(".png", ".jpg.png"), out)  # stems differ: matched by order
    res = run_evaluation(_settings(dataset, tmp_path / "out", results=str(tmp_path / "res"), lpips=False))
    m = res.metrics
    assert m["videos"] == 2 and m["frames"] == 2 * F
    assert m["psnr"] == 100.0 and m["psnr_video_mean"] == 100.0  # inf frames capped at 100 dB
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert m["ewarp_x1e-3"] == pytest.approx(m["ewarp_gt_x1e-3"], rel=1e-12) and m["ewarp_gt_x1e-3"] > 0
    frames_csv = _csv(tmp_path / "out" / "per_frame.csv")
    assert len(frames_csv) == 2 * F and all(r["psnr"] == "inf" for r in frames_csv)
    assert len(_csv(tmp_path / "out" / "per_video.csv")) == 2


def test_results_known_perturbation_matches_formula(dataset, tmp_path):
    for v in ("vid0", "vid1"):
        video = load_eval_video(dataset, v, (W, H))
        gt = video.frames.astype(np.int16)
        pred = np.where(gt <= 245, gt + 10, gt - 10).astype(np.uint8)  # |error| = 10 everywhere
        for t, name in enumerate(video.frame_names):
            _write_rgb(tmp_path / "res" / v / name, pred[t])
    res = run_evaluation(_settings(dataset, tmp_path / "out", results=str(tmp_path / "res"), lpips=False))
    expected, rows = [], _csv(tmp_path / "out" / "per_frame.csv")
    for v in ("vid0", "vid1"):
        masks = load_eval_video(dataset, v, (W, H)).masks
        for t in range(F):
            ratio = masks[t].mean()  # only the hole differs after compositing: MSE = 100 * hole fraction
            expected.append(10 * math.log10(255.0**2 / (100.0 * ratio)))
    got = [float(r["psnr"]) for r in rows]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose([float(r["masked_psnr"]) for r in rows], 10 * math.log10(255.0**2 / 100.0), rtol=1e-5)
    assert res.metrics["psnr"] == pytest.approx(np.mean(expected), rel=1e-9)


@pytest.mark.parametrize("method", ["telea", "propagate"])
def test_method_end_to_end(dataset, tmp_path, method):
    out = tmp_path / "out"
    res = run_evaluation(_settings(dataset, out, method=method, overrides=["flow.method=dis"], lpips=False))
    assert res.statuses == {"vid0": "evaluated", "vid1": "evaluated"}
    for name in ("per_video.csv", "per_frame.csv", "summary.json", "run.json", "videos/vid0.json", "videos/vid1.json"):
        assert (out / name).is_file(), name
    videos = _csv(out / "per_video.csv")
    assert [r["video"] for r in videos] == ["vid0", "vid1"] and all(float(r["sec_per_frame"]) > 0 for r in videos)
    summary = json.loads((out / "summary.json").read_text())
    assert {"metrics", "config", "git_commit", "environment", "date"} <= set(summary)
    assert {"psnr", "ssim", "psnr_video_mean", "ewarp_x1e-3"} <= set(summary["metrics"]) and "vfid" not in summary["metrics"]
    assert summary["config"]["settings"]["method"] == method and "python" in summary["environment"]
    rows = _csv(out / "per_frame.csv")
    for v in ("vid0", "vid1"):
        video = load_eval_video(dataset, v, (W, H))
        saved = np.stack([cv2.cvtColor(cv2.imread(str(out / "results" / v / n)), cv2.COLOR_BGR2RGB) for n in video.frame_names])
        outside = video.masks == 0
        np.testing.assert_array_equal(saved[outside], video.frames[outside])  # ground truth outside the hole
        scored = [float(r["psnr"]) for r in rows if r["video"] == v]
        np.testing.assert_allclose(scored, [psnr(g, s) for g, s in zip(video.frames, saved)], rtol=1e-5)
        assert all(20 < p < 100 for p in scored)  # really inpainted, not a copy of the ground truth


def test_method_never_sees_the_hole(dataset, tmp_path, monkeypatch):
    seen = []

    def spy(cfg):
        def run(read_frames, read_masks, total, sink, progress=True):
            frames, masks = read_frames(0, total), read_masks(0, total)
            seen.append(bool((frames[masks > 0] == 0).all()) and masks.any())
            sink(0, frames)
        return run

    monkeypatch.setattr(harness, "build_eval_method", spy)
    run_evaluation(_settings(dataset, tmp_path / "out", method="telea", lpips=False))
    assert seen and all(seen)


def test_resume_skips_finished_videos(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = run_evaluation(_settings(dataset, out, method="telea", lpips=False))
    calls = []
    monkeypatch.setattr(harness, "build_eval_method", lambda cfg: calls.append(cfg) or (lambda rf, rm, n, sink, progress=True: sink(0, rf(0, n))))
    again = run_evaluation(_settings(dataset, out, method="telea", lpips=False))
    assert calls == [] and again.skipped == ["vid0", "vid1"]
    assert again.metrics["psnr"] == first.metrics["psnr"]
    assert json.loads((out / "summary.json").read_text())["run_counts"]["skipped"] == 2
    (out / "videos" / "vid1.json").unlink()  # crash after saving results: rescored without rerunning the method
    third = run_evaluation(_settings(dataset, out, method="telea", lpips=False))
    assert calls == [] and third.statuses == {"vid0": "skipped", "vid1": "rescored"}
    assert third.metrics["psnr"] == pytest.approx(first.metrics["psnr"], rel=1e-12)
    with pytest.raises(InputError, match="window.overlap"):  # other settings: refused without --overwrite
        run_evaluation(_settings(dataset, out, method="telea", overrides=["window.overlap=2"], lpips=False))
    redo = run_evaluation(_settings(dataset, out, method="telea", overrides=["window.overlap=2"], lpips=False, overwrite=True))
    assert len(calls) == 1 and set(redo.statuses.values()) == {"evaluated"}


def test_vfid_with_i3d_weights_fills_in_on_resume(dataset, tmp_path, monkeypatch):
    """A random-init I3D checkpoint loads through the real loader; features are a cheap stand-in (the network
    on CPU takes seconds per video), so VFID must equal the Frechet distance of exactly those features."""
    import torch

    from fffvdi.evaluation import scoring
    from fffvdi.metrics import InceptionI3D, vfid

    torch.manual_seed(0)
    weights = tmp_path / "i3d_rgb_imagenet.pt"
    torch.save(InceptionI3D().state_dict(), weights)
    feats = lambda model, frames: frames.reshape(-1, 3).mean(0) / 255.0 + frames.std() / 255.0  # noqa: E731
    monkeypatch.setattr(scoring, "i3d_features", lambda model, frames: np.asarray(feats(model, frames)))
    real, fake = [], []
    for v in ("vid0", "vid1"):
        video = load_eval_video(dataset, v, (W, H))
        pred = video.frames.copy()
        pred[video.masks > 0] //= 2  # darker hole
        for t, name in enumerate(video.frame_names):
            _write_rgb(tmp_path / "res" / v / name, pred[t])
        real.append(feats(None, video.frames))
        fake.append(feats(None, pred))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="VFID skipped"):
        first = run_evaluation(_settings(dataset, out, results=str(tmp_path / "res"), lpips=False))
    assert "vfid" not in first.metrics
    second = run_evaluation(_settings(dataset, out, results=str(tmp_path / "res"), lpips=False, i3d_weights=str(weights)))
    assert set(second.statuses.values()) == {"evaluated"}  # cached records lack I3D features: scored again
    assert second.metrics["vfid"] == pytest.approx(vfid(np.array(real), np.array(fake)), rel=1e-9)
    assert second.metrics["vfid"] > 1e-4


def test_errors(dataset, tmp_path, capsys):
    with pytest.raises(InputError, match="i3d_rgb_imagenet.pt"):
        run_evaluation(_settings(dataset, tmp_path / "o1", method="telea", i3d_weights=str(tmp_path / "missing.pt")))
    with pytest.raises(InputError, match="dataset root not found"):
        run_evaluation(_settings(tmp_path / "nope", tmp_path / "o2", method="telea"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        run_evaluation(_settings(dataset, tmp_path / "busy", method="telea", lpips=False))
    (tmp_path / "list.txt").write_text("vid1\nghost\n")
    with pytest.raises(InputError, match="ghost"):
        run_evaluation(_settings(dataset, tmp_path / "o3", method="telea", video_list=str(tmp_path / "list.txt")))

    main = _cli_main()
    assert main(["--dataset-root", str(tmp_path / "nope"), "--method", "telea", "--output", str(tmp_path / "o4")]) == 2
    assert "error: dataset root not found" in capsys.readouterr().err


def test_video_list_and_cli_table(dataset, tmp_path, capsys):
    main = _cli_main()
    (tmp_path / "list.txt").write_text("# one video\nvid1\n")
    args = ["--dataset-root", str(dataset), "--video-list", str(tmp_path / "list.txt"), "--method", "telea",
            "--output", str(tmp_path / "out"), "--size", f"{W}x{H}", "--no-lpips", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Ewarp(x1e-3)" in text and "flow dis" in text and "VFID: skipped" in text
    assert [r["video"] for r in _csv(tmp_path / "out" / "per_video.csv")] == ["vid1"]


def test_synthetic_eval_layout_is_what_the_harness_reads(tmp_path):
    """make_synthetic_dataset(layout="eval"): JPEGImages/ + test_masks/, moving then stationary rectangles."""
    from fffvdi.data.synthetic import make_synthetic_dataset
    from fffvdi.evaluation import list_videos

    meta = make_synthetic_dataset(tmp_path / "ev", 2, F, (H, W), seed=3, num_short=0, layout="eval")
    assert not (tmp_path / "ev" / "Annotations").exists() and list_videos(tmp_path / "ev") == ["synth_000", "synth_001"]
    moving, still = (load_eval_video(tmp_path / "ev", v, size=None, dilate=0) for v in ("synth_000", "synth_001"))
    for video in (moving, still):
        assert video.frames.shape == (F, H, W, 3) and video.masks.any(axis=(1, 2)).all()
        ys, xs = np.nonzero(video.masks[0])  # one filled rectangle
        assert video.masks[0].sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    assert meta["videos"]["synth_000"]["test_mask"]["moving"] and not meta["videos"]["synth_001"]["test_mask"]["moving"]
    assert any(not np.array_equal(moving.masks[0], m) for m in moving.masks[1:])
    assert all(np.array_equal(still.masks[0], m) for m in still.masks[1:])
    make_synthetic_dataset(tmp_path / "tr", 2, F, (H, W), seed=3, num_short=0)  # same seed, training layout
    frames = [sorted((tmp_path / d / "JPEGImages" / "synth_000").iterdir()) for d in ("tr", "ev")]
    assert [p.read_bytes() for p in frames[0]] == [p.read_bytes() for p in frames[1]]  # masks draw from their own generator
    with pytest.raises(InputError, match="--overwrite"):
        make_synthetic_dataset(tmp_path / "ev", 2, F, (H, W), seed=3, layout="eval")
    with pytest.raises(InputError, match="layout 'x' is unknown"):
        make_synthetic_dataset(tmp_path / "x", 1, F, (H, W), layout="x")


def test_synthetic_eval_script_flag(tmp_path):
    """scripts/make_synthetic_dataset.py --eval: every video full length, the evaluation layout."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_synthetic_dataset.py"
    out = tmp_path / "ev"
    res = subprocess.run([sys.executable, str(script), str(out), "--eval", "--videos", "3", "--frames", "5",
                          "--size", "40x72"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["JPEGImages", "synthetic_meta.json", "test_masks"]
    for video in ("synth_000", "synth_001", "synth_002"):
        assert len(list((out / "test_masks" / video).glob("*.png"))) == 5  # no short video in an evaluation set
        assert len(list((out / "JPEGImages" / video).glob("*.jpg"))) == 5



def _script_options() -> set[str]:
    """Every --flag scripts/evaluate.py accepts, read from its parser."""
    main = _cli_main()
    parse_args = main.__globals__["parse_args"]
    seen = []

    class Spy(main.__globals__["OneLineParser"]):
        def parse_args(self, argv=None, namespace=None):
            seen.extend(o for action in self._actions for o in action.option_strings)
            return super().parse_args(argv, namespace)

    main.__globals__["OneLineParser"] = Spy
    try:
        parse_args(["--dataset-root", "x", "--output", "y", "--method", "telea"])
    finally:
        main.__globals__["OneLineParser"] = Spy.__mro__[1]
    return {o for o in seen if o.startswith("--")}


def _refused(capsys, main, args: list[str], out, *expected: str) -> str:
    """Exit 2, one `error:` line naming `expected`, only flags the script has, and nothing written at `out`."""
    code = main([*args, "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert all(e in err for e in expected), err
    other_tools = {"--local-dir"}  # `hf download ... --local-dir DIR` in the hub hint
    unknown = set(re.findall(r"--[a-z0-9][a-z0-9-]*", err)) - _script_options() - other_tools
    assert not unknown, f"message names flags evaluate.py does not have: {unknown}: {err}"
    assert not out.exists(), f"{out} written before the error"
    return err


def test_bad_flags_fail_before_anything_is_written(dataset, tmp_path, capsys, monkeypatch):
    main = _cli_main()
    base = ["--dataset-root", str(dataset), "--method", "telea", "--size", f"{W}x{H}"]
    out = tmp_path / "out"
    _refused(capsys, main, [*base, "--mask-dilate", "-1"], out, "--mask-dilate -1", ">= 0")
    _refused(capsys, main, [*base, "--device", "gpu"], out, "--device 'gpu' is unknown")
    if not torch.cuda.is_available():
        _refused(capsys, main, [*base, "--device", "cuda"], out, "--device cuda", "no such CUDA device")
    _refused(capsys, main, [*base, "--size", "0x5"], out, "--size '0x5'")
    _refused(capsys, main, [*base, "propagate.radius=-3"], out, "propagate.radius")
    _refused(capsys, main, [*base, "--raft-weights", str(tmp_path / "r.pth")], out, "--raft-weights only applies")
    _refused(capsys, main, [*base, "--flow", "raft_small", "--raft-weights", str(tmp_path / "r.pth")], out, "not found")
    (tmp_path / "r.pth").write_bytes(b"not a checkpoint")
    _refused(capsys, main, [*base, "--flow", "raft_small", "--raft-weights", str(tmp_path / "r.pth")], out,
             "is not a raft_small state dict")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")  # a state dict of another network
    _refused(capsys, main, [*base, "--flow", "raft_small", "--raft-weights", str(tmp_path / "other.pth")], out,
             "is not a raft_small state dict")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # torchvision's RAFT file is not cached there
    _refused(capsys, main, [*base, "--flow", "raft_large"], out, "--flow raft_large needs its weights", "--raft-weights FILE")
    _refused(capsys, main, [*base, "--i3d-weights", str(tmp_path / "r.pth")], out, "--i3d-weights", "I3D weights")
    with pytest.raises(SystemExit) as info:  # argparse's own errors are one line too
        main([*base, "--flow", "foo", "--output", str(out)])
    assert info.value.code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument --flow: invalid choice") and "\n" not in err


def test_bad_model_source_fails_before_anything_is_written(dataset, tmp_path, capsys, tiny_svd_dir, monkeypatch):
    from diffusers import AutoencoderKLTemporalDecoder

    monkeypatch.setattr(AutoencoderKLTemporalDecoder, "from_pretrained", lambda *a, **k: pytest.fail("a model loaded"))
    main = _cli_main()
    base = ["--dataset-root", str(dataset), "--method", "fffvdi", "--size", f"{W}x{H}"]
    out = tmp_path / "out"
    _refused(capsys, main, [*base, f"model.pretrained={tmp_path / 'nope'}"], out, "model folder not found")
    _refused(capsys, main, [*base, f"model.pretrained={tiny_svd_dir}", f"model.checkpoint={tmp_path}"], out,
             "config.json missing")
    _refused(capsys, main, [*base, "model.pretrained=someorg/not-cached-svd"], out, "not in the local cache")


def test_bad_scoring_models_fail_before_the_output_folder_is_touched(dataset, tmp_path):
    bad = tmp_path / "i3d.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "never"
    with pytest.raises(FFFVDIError, match=r"could not read I3D weights .*i3d\.pt") as err:
        run_evaluation(_settings(dataset, out, method="telea", lpips=False, i3d_weights=str(bad)))
    assert "\n" not in str(err.value)
    assert not out.exists()
    with pytest.raises(FFFVDIError):
        run_evaluation(_settings(dataset, out, method="fffvdi", lpips=False,
                                 overrides=["model.pretrained=/nonexistent/svd"]))
    assert not out.exists()
