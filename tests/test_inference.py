"""The inference pipeline and CLI end to end on tiny random components (CPU)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


CLI = load_script("inference")


def _write_clip(folder: Path, n: int, h: int, w: int, names=None, seed=0):
    """A smooth panning texture as PNG frames, plus a moving square mask per frame."""
    rng = np.random.default_rng(seed)
    big = cv2.resize(rng.uniform(0, 255, (h // 8 + 4, w // 8 + 4 + n, 3)).astype(np.float32), (w + 32 + 8 * n, h + 32))
    (folder / "frames").mkdir(parents=True)
    (folder / "masks").mkdir()
    names = names or [f"{i:05d}" for i in range(n)]
    for i, name in enumerate(names):
        frame = big[8 : 8 + h, 8 + 2 * i : 8 + 2 * i + w].clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / "frames" / f"{name}.png"), frame)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3 : h // 3 + h // 4, (w // 4 + i) % (w // 2) : (w // 4 + i) % (w // 2) + w // 5] = 255
        cv2.imwrite(str(folder / "masks" / f"{name}.png"), mask)
    return folder / "frames", folder / "masks"


def _tiny_args(tiny_svd_dir, out, *extra):
    return [
        "--config", str(ROOT / "configs" / "inference_tiny.yaml"), "--output", str(out),
        f"model.pretrained={tiny_svd_dir}", "sampling.num_steps=2", "window.height=64", "window.width=64",
        "window.num_frames=6", "window.overlap=2", "output.save_comparison=false", *extra,
    ]


def _read_frames(folder):
    return {p.name: cv2.imread(str(p))[..., ::-1] for p in sorted(Path(folder).glob("*.png"))}


def test_odd_size_and_length_keep_names_size_count_fps(tmp_path, tiny_svd_dir):
    names = [f"img_{i}" for i in range(1, 12)]  # natural order 1..11, 11 frames: not a multiple of the window
    frames_dir, masks_dir = _write_clip(tmp_path / "in", 11, 39, 67, names=names)
    out = tmp_path / "out"
    assert CLI.main(["--video", str(frames_dir), "--mask", str(masks_dir), "--fps", "12", *_tiny_args(tiny_svd_dir, out)]) == 0
    result = _read_frames(out / "frames")
    assert sorted(result) == sorted(f"{n}.png" for n in names)
    assert all(img.shape == (39, 67, 3) for img in result.values())
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(out / "inpainted.mp4"))
    info = next(reader)
    assert abs(info["fps"] - 12) < 1e-6
    assert sum(1 for _ in reader) == 11
    assert (out / "masked_input.mp4").is_file() and (out / "config.yaml").is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["pretrained"] == str(tiny_svd_dir) and saved["window"]["num_frames"] == 6

    # pixels outside the (dilated) mask are bit-identical to the input
    from fffvdi.io import load_masks

    masks = load_masks(masks_dir, 11, (39, 67), dilate=saved["mask"]["dilate"])
    inputs = _read_frames(frames_dir)
    for i, n in enumerate(names):
        keep = masks[i] == 0
        assert np.array_equal(result[f"{n}.png"][keep], inputs[f"{n}.png"][keep])
        assert not np.array_equal(result[f"{n}.png"], inputs[f"{n}.png"])  # the hole was regenerated


def test_same_seed_same_output_and_seed_matters(tmp_path, tiny_svd_dir):
    frames_dir, masks_dir = _write_clip(tmp_path / "in", 5, 32, 48)
    runs = {}
    for tag, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / tag
        CLI.main(["--video", str(frames_dir), "--mask", str(masks_dir), *_tiny_args(tiny_svd_dir, out, f"sampling.seed={seed}")])
        runs[tag] = _read_frames(out / "frames")
    assert all(np.array_equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert any(not np.array_equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    frames_dir, masks_dir = _write_clip(tmp_path / "in", 3, 16, 16)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    args = ["--video", str(frames_dir), "--mask", str(masks_dir), "--method", "propagate", "--output", str(out)]
    assert CLI.main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --overwrite replaces a previous result only, never a folder holding other files
    assert CLI.main(args + ["--overwrite"]) == 2
    assert "keep.txt" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    assert not (tmp_path / "out.partial").exists()

    result = tmp_path / "result"
    assert CLI.main(args[:-1] + [str(result)]) == 0
    first = _read_frames(result / "frames")
    assert CLI.main(args[:-1] + [str(result)]) == 2  # a complete result is kept ...
    assert "--overwrite" in capsys.readouterr().err
    assert CLI.main(args[:-1] + [str(result), "--overwrite", "propagate.combine=nearest"]) == 0  # ... or replaced
    assert "combine: nearest" in (result / "config.yaml").read_text() and len(_read_frames(result / "frames")) == 3
    assert sorted(first) == sorted(_read_frames(result / "frames"))
    assert not (tmp_path / "result.partial").exists() and not (tmp_path / "result.replaced").exists()


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing_video", "nope"),
        ("missing_mask", "nomask"),
        ("count", "mask"),
        ("size_error", "size"),
        ("unreadable", "00001.png"),
        ("empty_folder", "empty"),
        ("bad_key", "sampling.num_stepz"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, case, needle, capsys):
    frames_dir, masks_dir = _write_clip(tmp_path / "in", 4, 16, 24)
    video, mask, extra = str(frames_dir), str(masks_dir), []
    if case == "missing_video":
        video = str(tmp_path / "nope")
    elif case == "missing_mask":
        mask = str(tmp_path / "nomask")
    elif case == "count":
        (masks_dir / "00003.png").unlink()
        (masks_dir / "00002.png").unlink()
    elif case == "size_error":
        cv2.imwrite(str(masks_dir / "00000.png"), np.zeros((8, 8), np.uint8))
        extra = ["mask.resize=error"]
    elif case == "unreadable":
        (frames_dir / "00001.png").write_bytes(b"not a png")
    elif case == "empty_folder":
        video = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    elif case == "bad_key":
        extra = ["sampling.num_stepz=3"]
    code = CLI.main(["--video", video, "--mask", mask, "--method", "propagate", "--output", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert needle in err


def test_empty_mask_warns_and_output_equals_input(tmp_path):
    frames_dir, masks_dir = _write_clip(tmp_path / "in", 4, 16, 24)
    for p in masks_dir.glob("*.png"):
        cv2.imwrite(str(p), np.zeros((16, 24), np.uint8))
    with pytest.warns(UserWarning, match="empty"):
        assert CLI.main(["--video", str(frames_dir), "--mask", str(masks_dir), "--method", "propagate", "--output", str(tmp_path / "o")]) == 0
    a, b = _read_frames(frames_dir), _read_frames(tmp_path / "o" / "frames")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_propagate_method_recovers_hidden_texture(tmp_path):
    """Oracle: the masks hide parts of a panning texture that other frames show; propagation recovers them."""
    from fffvdi.metrics import masked_psnr

    frames_dir, masks_dir = _write_clip(tmp_path / "in", 12, 48, 64)
    out = tmp_path / "o"
    assert CLI.main(["--video", str(frames_dir), "--mask", str(masks_dir), "--method", "propagate", "--output", str(out), "mask.dilate=0"]) == 0
    assert (out / "comparison.mp4").is_file()
    truth, result = _read_frames(frames_dir), _read_frames(out / "frames")
    masks = {p.name: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in masks_dir.glob("*.png")}
    scores = [masked_psnr(truth[k], result[k], masks[k]) for k in truth]
    assert len(result) == 12 and min(scores) > 35.0


@pytest.mark.parametrize(
    "extra",
    [
        ["sampling.fill_source=inversion", "sampling.inversion_steps=2"],
        ["sampling.clip_source=filled", "output.feather=3"],
        ["memory.offload=model", "memory.forward_chunk_size=1", "memory.attention=default", "model.dtype=bfloat16"],
    ],
)
def test_pipeline_options_run(tmp_path, tiny_svd_dir, extra):
    frames_dir, masks_dir = _write_clip(tmp_path / "in", 4, 32, 32)
    out = tmp_path / "o"
    assert CLI.main(["--video", str(frames_dir), "--mask", str(masks_dir), *_tiny_args(tiny_svd_dir, out, *extra)]) == 0
    assert len(list((out / "frames").glob("*.png"))) == 4


def test_unknown_choice_fails_before_writing(tmp_path, tiny_svd_dir, capsys):
    frames_dir, masks_dir = _write_clip(tmp_path / "in", 4, 32, 32)
    out = tmp_path / "o"
    code = CLI.main(["--video", str(frames_dir), "--mask", str(masks_dir), *_tiny_args(tiny_svd_dir, out, "sampling.clip_source=gt")])
    assert code == 2 and "sampling.clip_source" in capsys.readouterr().err
    assert not out.exists()


def test_propagate_on_an_mp4_decodes_it_twice(tmp_path, monkeypatch):
    """The method reads the video in one pass, and the mp4s are encoded at the end from the PNGs and a second
    pass: never a decoder restarted from frame 0 for every output frame."""
    from fffvdi.io import video as video_io
    from fffvdi.io import write_video

    frames_dir, masks_dir = _write_clip(tmp_path / "in", 20, 48, 64)
    clip = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(frames_dir.glob("*.png"))])
    write_video(tmp_path / "clip.mp4", clip, fps=10)
    restarts = []
    original = video_io._SequentialDecoder._restart
    monkeypatch.setattr(video_io._SequentialDecoder, "_restart", lambda self: restarts.append(1) or original(self))
    out = tmp_path / "o"
    assert CLI.main(["--video", str(tmp_path / "clip.mp4"), "--mask", str(masks_dir), "--method", "propagate",
                     "--output", str(out), "propagate.radius=5"]) == 0
    assert len(list((out / "frames").glob("*.png"))) == 20
    assert len(restarts) == 2


def test_propagate_crop_on_an_mp4_pastes_back_without_restarting_the_decoder(tmp_path, monkeypatch):
    """window.region=crop pastes each finished crop into its full frame, read `radius` frames behind the method's
    reads: a second reader trails the first (one pass each, plus the encoding pass), never one restart per frame."""
    from fffvdi.io import video as video_io
    from fffvdi.io import write_video

    frames_dir, masks_dir = _write_clip(tmp_path / "in", 20, 96, 160)  # the crop is smaller than the frame
    clip = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(frames_dir.glob("*.png"))])
    write_video(tmp_path / "clip.mp4", clip, fps=10)
    restarts = []
    original = video_io._SequentialDecoder._restart
    monkeypatch.setattr(video_io._SequentialDecoder, "_restart", lambda self: restarts.append(1) or original(self))
    out = tmp_path / "o"
    assert CLI.main(["--video", str(tmp_path / "clip.mp4"), "--mask", str(masks_dir), "--method", "propagate",
                     "--output", str(out), "propagate.radius=5", "window.region=crop"]) == 0
    assert len(list((out / "frames").glob("*.png"))) == 20
    assert len(restarts) == 3  # the method's pass, the paste-back's trailing pass, the encoding pass


def test_first_frame_fill_gets_latent_masks_and_forward_flows_in_order(tmp_path, tiny_svd_dir, monkeypatch):
    """Wiring: the content pans left 2 px/frame, so at latent scale flows_fw is about -0.25 and flows_bw +0.25."""
    import fffvdi.inpaint.pipeline as pipeline_mod

    calls = []
    real = pipeline_mod.fill_first_frame_noise

    def spy(noise, masks_l, flows_fw_l, flows_bw_l, **kw):
        calls.append((noise.shape, masks_l.clone(), flows_fw_l.clone(), flows_bw_l.clone()))
        return real(noise, masks_l, flows_fw_l, flows_bw_l, **kw)

    monkeypatch.setattr(pipeline_mod, "fill_first_frame_noise", spy)
    frames_dir, masks_dir = _write_clip(tmp_path / "in", 6, 64, 128)
    args = _tiny_args(tiny_svd_dir, tmp_path / "o", "window.width=128", "mask.dilate=0")
    assert CLI.main(["--video", str(frames_dir), "--mask", str(masks_dir), *args]) == 0
    (shape, masks_l, fw, bw), = calls
    assert shape[1] == 6 and masks_l.shape == (1, 6, 1, 8, 16) and fw.shape == bw.shape == (1, 5, 2, 8, 16)
    mask0 = cv2.imread(str(masks_dir / "00000.png"), cv2.IMREAD_GRAYSCALE) > 127
    assert masks_l[0, 0, 0].sum() > 0 and masks_l[0, 0, 0].sum() <= mask0.sum() / 64 + 4  # the hole, at 1/8
    assert fw[0, :, 0].median() < -0.15 < 0.15 < bw[0, :, 0].median()


def test_cli_hands_the_method_masks_read_with_the_configured_dilation_and_mode(tmp_path, monkeypatch):
    import fffvdi.inpaint.methods as methods_mod
    from fffvdi.io import load_masks

    seen = {}

    def spy(cfg):
        def run(read_frames, read_masks, total, sink, progress=True):
            seen["masks"] = read_masks(0, total)
            sink(0, read_frames(0, total))
        return run

    monkeypatch.setattr(methods_mod, "build_method", spy)
    frames_dir, masks_dir = _write_clip(tmp_path / "in", 5, 32, 48)
    assert CLI.main(["--video", str(frames_dir), "--mask", str(masks_dir), "--method", "telea",
                     "--output", str(tmp_path / "o"), "mask.dilate=3"]) == 0
    expected = load_masks(masks_dir, 5, (32, 48), dilate=3)
    assert np.array_equal(seen["masks"], expected) and expected.sum() > load_masks(masks_dir, 5, (32, 48)).sum()
    assert CLI.main(["--video", str(frames_dir), "--mask", str(masks_dir), "--method", "telea",
                     "--output", str(tmp_path / "b"), "mask.dilate=0", "mask.mode=box"]) == 0
    assert np.array_equal(seen["masks"], load_masks(masks_dir, 5, (32, 48), mode="box"))
