"""First-hour frictions (issue #22 items 4-6): odd sizes in mp4s are said, duplicate frame stems are refused, and
evaluation at 432x240 accepts a dataset that is not 16:9."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from conftest import load_script

from fffvdi.errors import InputError
from fffvdi.evaluation import load_eval_video
from fffvdi.io import MaskSource, VideoSource, dilate_mask, write_video

NOTE = "odd side"  # in the one-line note of fffvdi.io.output.note_padding


def _clip(folder: Path, n: int, h: int, w: int, exts=("png",), mask_size=None) -> tuple[Path, Path]:
    """Random frames `frames/<i>.<ext>` (every ext) and a square hole mask per frame `masks/<i>.png`."""
    rng = np.random.default_rng(0)
    (folder / "frames").mkdir(parents=True)
    (folder / "masks").mkdir()
    mh, mw = mask_size or (h, w)
    for i in range(n):
        frame = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
        for ext in exts:
            assert cv2.imwrite(str(folder / "frames" / f"{i:05d}.{ext}"), frame)
        mask = np.zeros((mh, mw), np.uint8)
        mask[mh // 3 : mh // 2, mw // 3 : mw // 2] = 255
        assert cv2.imwrite(str(folder / "masks" / f"{i:05d}.png"), mask)
    return folder / "frames", folder / "masks"


def _mp4_size(path: Path) -> tuple[int, int]:
    """(W, H) of a video file's decoded frames."""
    reader = imageio_ffmpeg.read_frames(str(path))
    size = next(reader)["size"]
    reader.close()
    return tuple(size)


# item 4: odd sizes


def test_odd_size_run_writes_even_mp4s_and_says_so(tmp_path: Path, caplog):
    frames, masks = _clip(tmp_path / "in", 18, 33, 45)  # more than encode_outputs' chunk of 16: two chunks
    out = tmp_path / "out"
    caplog.set_level(logging.INFO)
    assert load_script("inference").main(["--video", str(frames), "--mask", str(masks), "--method", "telea",
                                          "--output", str(out)]) == 0
    assert all(cv2.imread(str(p)).shape == (33, 45, 3) for p in (out / "frames").glob("*.png"))
    sizes = {name: _mp4_size(out / name) for name in ("inpainted.mp4", "masked_input.mp4", "comparison.mp4")}
    assert sizes == {"inpainted.mp4": (46, 34), "masked_input.mp4": (46, 34), "comparison.mp4": (90, 34)}
    notes = [r.getMessage() for r in caplog.records if NOTE in r.getMessage()]
    assert len(notes) == 1, notes  # one line for the run, not one per mp4
    assert "45x33" in notes[0] and "inpainted.mp4 46x34" in notes[0] and "comparison.mp4 90x34" in notes[0]


def test_writer_notes_padding_only_for_odd_sizes(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="fffvdi.io.output")
    write_video(tmp_path / "odd.mp4", np.zeros((2, 33, 45, 3), np.uint8), fps=5)
    assert _mp4_size(tmp_path / "odd.mp4") == (46, 34)
    assert [r.getMessage() for r in caplog.records if NOTE in r.getMessage() and "odd.mp4 46x34" in r.getMessage()]
    caplog.clear()
    write_video(tmp_path / "even.mp4", np.zeros((2, 32, 44, 3), np.uint8), fps=5)
    assert _mp4_size(tmp_path / "even.mp4") == (44, 32)
    assert not [r for r in caplog.records if NOTE in r.getMessage()]


# item 5: one frame under two extensions


def test_frames_under_two_extensions_are_refused(tmp_path: Path):
    frames, masks = _clip(tmp_path, 4, 16, 16, exts=("jpg", "png"))
    with pytest.raises(InputError, match=r"frame folder .* 4 frames under two extensions \(00000\.jpg/00000\.png, "
                                         r".* and 1 more\).*keep one extension"):
        VideoSource(frames)
    for ext in ("jpg", "png"):  # masks: the symptom was "8 masks but the video has 4 frames"
        for p in frames.glob(f"*.{ext}"):
            cv2.imwrite(str(masks / p.name), np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError, match=r"mask folder .*masks has 4 masks under two extensions.*keep one extension"):
        MaskSource(masks, 4, (16, 16))


def test_distinct_stems_in_mixed_extensions_still_read(tmp_path: Path):
    frames, masks = _clip(tmp_path, 3, 16, 16)
    Path(frames / "00001.png").rename(frames / "00001.jpg")  # one video in two formats, each frame once
    assert len(VideoSource(frames)) == 3 and len(MaskSource(masks, 3, (16, 16))) == 3


def test_inference_cli_names_duplicate_masks(tmp_path: Path, capsys):
    frames, masks = _clip(tmp_path, 2, 16, 16)
    cv2.imwrite(str(masks / "00001.jpg"), np.zeros((16, 16), np.uint8))
    code = load_script("inference").main(["--video", str(frames), "--mask", str(masks), "--method", "telea",
                                          "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "00001.jpg/00001.png" in err and "keep one extension" in err


# item 6: evaluation of a dataset that is not 16:9


def _dataset(root: Path, h: int, w: int, mask_size=None) -> Path:
    """One 3-frame video `v` in the test layout (JPEGImages/ PNGs, test_masks/)."""
    frames, masks = _clip(root / "tmp", 3, h, w, mask_size=mask_size)
    (root / "JPEGImages").mkdir()
    (root / "test_masks").mkdir()
    frames.rename(root / "JPEGImages" / "v")
    masks.rename(root / "test_masks" / "v")
    return root


def test_evaluate_non_16_9_dataset_at_432x240(tmp_path: Path, capsys):
    root = _dataset(tmp_path / "qcif", 72, 88)  # 11:9, like QCIF's 176x144
    out = tmp_path / "out"
    args = ["--dataset-root", str(root), "--method", "telea", "--output", str(out), "--no-lpips", "--no-progress"]
    assert load_script("evaluate").main(args) == 0, capsys.readouterr().err
    with open(out / "per_video.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["video"] for r in rows] == ["v"] and 10 < float(rows[0]["psnr"]) < 100
    saved = [cv2.imread(str(p)) for p in sorted((out / "results" / "v").glob("*.png"))]
    assert len(saved) == 3 and all(img.shape == (240, 432, 3) for img in saved)
    # frames and masks resized to 432x240 alike: the source mask stretched (nearest, as PIL), then dilated
    video = load_eval_video(root, "v")
    source = cv2.imread(str(root / "test_masks" / "v" / "00000.png"), cv2.IMREAD_GRAYSCALE)
    expected = dilate_mask(cv2.resize((source > 0).astype(np.uint8), (432, 240), interpolation=cv2.INTER_NEAREST_EXACT), 4)
    np.testing.assert_array_equal(video.masks[0], expected)
    assert video.frames.shape == (3, 240, 432, 3)


def test_evaluate_refuses_masks_drawn_for_other_frames(tmp_path: Path, capsys):
    root = _dataset(tmp_path / "bad", 72, 88, mask_size=(60, 80))  # 4:3 masks for 11:9 frames
    args = ["--dataset-root", str(root), "--method", "telea", "--output", str(tmp_path / "out"), "--no-lpips",
            "--no-progress"]
    assert load_script("evaluate").main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "00000.png is 60x80 (HxW) but its frames are 72x88" in err
    assert "another aspect ratio" in err


def test_masks_already_at_the_evaluation_size_are_kept(tmp_path: Path):
    """ProPainter's 432x240 test_masks next to full-resolution DAVIS frames (854x480: not exactly 432x240's aspect)."""
    root = _dataset(tmp_path / "davis", 96, 171, mask_size=(240, 432))
    video = load_eval_video(root, "v", dilate=0)
    source = cv2.imread(str(root / "test_masks" / "v" / "00000.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(video.masks[0], (source > 0).astype(np.uint8))
