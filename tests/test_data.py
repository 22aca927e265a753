"""Tests of the training data: mask generators, the YouTube-VOS clip dataset and the synthetic dataset."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fffvdi.data.masks import MaskGenerator, free_form_blob, moving_rectangles, object_masks
from fffvdi.data.synthetic import make_synthetic_dataset
from fffvdi.data.youtube_vos import VideoClipDataset, natural_key, read_annotation
from fffvdi.errors import ConfigError, InputError
from fffvdi.flow.warp import flow_warp

REPO = Path(__file__).resolve().parents[1]
F, H, W = 12, 48, 80


def centroid(mask: np.ndarray) -> np.ndarray:
    """(x, y) centroid of a `[H, W]` binary mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("seed", range(8))
def test_moving_rectangles_shape_area_motion(seed: int) -> None:
    m = moving_rectangles(F, H, W, np.random.default_rng(seed))
    assert m.shape == (F, 1, H, W) and m.dtype == np.uint8
    assert set(np.unique(m)) == {0, 1}
    for t in range(F):
        ys, xs = np.nonzero(m[t, 0])
        bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert m[t, 0].sum() == bh * bw  # a solid axis-aligned rectangle
        # 20-80 % of each side, +-10 % size oscillation, +-1 px rounding.
        assert 0.2 * 0.9 * H - 1 <= bh <= 0.8 * 1.1 * H + 1
        assert 0.2 * 0.9 * W - 1 <= bw <= 0.8 * 1.1 * W + 1
    steps = [np.linalg.norm(centroid(m[t + 1, 0]) - centroid(m[t, 0])) for t in range(F - 1)]
    assert np.mean(np.array(steps) > 0) >= 0.8  # moves (1-3 px/frame) nearly every frame
    assert max(steps) <= 3.0 + 2.0  # speed cap plus rounding and size change


def test_moving_rectangles_bounce_inside_frame() -> None:
    # Fast rectangles of fixed size on a small frame hit every border yet are never clipped by it.
    for seed in range(5):
        rng = np.random.default_rng(seed)
        m = moving_rectangles(300, 24, 32, rng, side_range=(0.5, 0.5), size_jitter=0.0, speed_range=(3.0, 3.0))
        cols, rows = m[:, 0].any(1), m[:, 0].any(2)  # [F, W], [F, H] covered columns / rows
        assert set(cols.sum(1).tolist()) <= {15, 16, 17} and set(rows.sum(1).tolist()) <= {11, 12, 13}
        assert np.array_equal(m.reshape(300, -1).sum(1), cols.sum(1) * rows.sum(1))  # solid rectangles
        assert cols[:, 0].any() and cols[:, -1].any() and rows[:, 0].any() and rows[:, -1].any()


def test_rectangle_size_oscillates() -> None:
    m = moving_rectangles(40, 100, 100, np.random.default_rng(0), side_range=(0.5, 0.5), accel_std=0.0)
    widths = m[:, 0].any(1).sum(1)  # [F] columns covered per frame
    assert widths.max() - widths.min() >= 5  # +-10 % of 50 px swings by up to 10 px
    assert 0.9 * 50 - 1 <= widths.min() and widths.max() <= 1.1 * 50 + 1


@pytest.mark.parametrize("seed", range(8))
def test_blob_shape_area_and_bounds(seed: int) -> None:
    m = free_form_blob(F, H, W, np.random.default_rng(seed))
    assert m.shape == (F, 1, H, W) and m.dtype == np.uint8
    assert set(np.unique(m)) == {0, 1}
    for t in (0, F - 1):
        ys, xs = np.nonzero(m[t, 0])
        # Bounding box 1/3 .. full side (+-1 px rounding).
        assert H / 3 - 1 <= ys.max() - ys.min() + 1 <= H
        assert W / 3 - 1 <= xs.max() - xs.min() + 1 <= W
        assert 0.02 <= m[t, 0].mean() <= 1.0


def test_blobs_stationary_vs_moving() -> None:
    for seed in range(4):
        still = free_form_blob(F, H, W, np.random.default_rng(seed), stationary_prob=1.0)
        assert (still == still[:1]).all()
        moving = free_form_blob(F, H, W, np.random.default_rng(seed), stationary_prob=0.0)
        assert not (moving == moving[:1]).all()
        # A moving blob translates: the area is constant (no clipping by the border).
        areas = moving.reshape(F, -1).sum(1)
        assert areas.min() == areas.max()


def test_blob_stationary_fraction() -> None:
    rng = np.random.default_rng(0)
    blobs = [free_form_blob(4, 16, 24, rng) for _ in range(200)]
    still = sum(bool((m == m[:1]).all()) for m in blobs)
    assert 70 <= still <= 130  # 50 % stationary


def test_masks_deterministic_given_seed() -> None:
    gen = MaskGenerator({"rectangles": 0.5, "blobs": 0.5})
    a = gen(F, H, W, np.random.default_rng(42))
    b = gen(F, H, W, np.random.default_rng(42))
    c = gen(F, H, W, np.random.default_rng(43))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_object_masks_dilate_and_bbox() -> None:
    ann = np.zeros((2, 20, 20), np.int64)
    ann[0, 5:8, 5:8] = 1  # 3x3 square
    ann[1, 10, 3:12] = 1  # a line
    ann[:, 15:18, 15:18] = 2
    m = object_masks(ann, np.random.default_rng(0), mode="dilate", dilate_iters=0, select="all")
    assert np.array_equal(m[:, 0], (ann > 0).astype(np.uint8))
    m = object_masks(ann, np.random.default_rng(0), mode="dilate", dilate_iters=1, select="all")
    assert m[0, 0, 4:9, 4:9].sum() == 25 - 4  # 3x3 grown by a 3x3 ellipse (cross) kernel: corners stay off
    assert m[0, 0, 3, 6] == 0 and m[0, 0].sum() == 21 + 21
    m = object_masks(ann, np.random.default_rng(0), mode="bbox", dilate_iters=0, select="all")
    expect = np.zeros((20, 20), np.uint8)
    expect[10:11, 3:12] = 1
    expect[15:18, 15:18] = 1
    assert np.array_equal(m[1, 0], expect)
    picked = {int(object_masks(ann, np.random.default_rng(s), select="one", dilate_iters=0)[0, 0, 16, 16]) for s in range(20)}
    assert picked == {0, 1}  # "one" picks object 1 for some seeds and object 2 for others
    assert object_masks(np.zeros((2, 8, 8), int), np.random.default_rng(0)).sum() == 0
    with pytest.raises(ConfigError):
        object_masks(ann, np.random.default_rng(0), mode="circle")


def test_mixture_respects_probabilities() -> None:
    gen = MaskGenerator({"rectangles": 0.2, "blobs": 0.3, "objects": 0.5})
    rng = np.random.default_rng(0)
    n = 4000
    with_ann = [gen.sample_kind(rng, True) for _ in range(n)]
    for kind, p in (("rectangles", 0.2), ("blobs", 0.3), ("objects", 0.5)):
        assert abs(with_ann.count(kind) / n - p) < 0.03
    without = [gen.sample_kind(rng, False) for _ in range(n)]
    assert "objects" not in without
    assert abs(without.count("rectangles") / n - 0.4) < 0.03  # renormalised 0.2 / 0.5


def test_mixture_outputs_and_never_empty() -> None:
    rects = MaskGenerator({"rectangles": 1.0})
    for s in range(5):
        m = rects(4, H, W, np.random.default_rng(s))
        ys, xs = np.nonzero(m[0, 0])
        assert m[0, 0].sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    # Objects absent from the annotation: fall back to a synthetic, non-empty mask.
    gen = MaskGenerator({"objects": 1.0, "blobs": 1e-9})
    m = gen(4, H, W, np.random.default_rng(0), annotations=np.zeros((4, H, W), int))
    assert m.shape == (4, 1, H, W) and m.mean() >= gen.min_area
    ann = np.zeros((4, H, W), int)
    ann[:, 10:30, 20:40] = 3
    m = gen(4, H, W, np.random.default_rng(0), annotations=ann)
    assert m[:, 0, 10:30, 20:40].all()  # the object itself is covered
    with pytest.raises(ConfigError):
        MaskGenerator({"rectangle": 1.0})
    with pytest.raises(ConfigError):
        MaskGenerator({"objects": 1.0})


# ---------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, num_videos=4, num_frames=14, size=(40, 72), seed=1, num_short=1, short_frames=5)
    return root


def test_natural_sort() -> None:
    assert sorted(["f10.jpg", "f2.jpg", "f1.jpg"], key=natural_key) == ["f1.jpg", "f2.jpg", "f10.jpg"]


def test_dataset_clip_shapes_and_ranges(synth_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fffvdi.data.youtube_vos"):
        ds = VideoClipDataset(synth_root, num_frames=8, size=(32, 48), seed=0)
    assert ds.num_skipped == 1 and len(ds) == 3  # the 5-frame video is skipped and counted
    assert "skipped 1 of 4" in caplog.text
    assert [v for v, _ in ds.videos] == ["synth_000", "synth_001", "synth_002"]
    item = ds[1]
    assert item["frames"].shape == (8, 3, 32, 48) and item["frames"].dtype == torch.float32
    assert item["masks"].shape == (8, 1, 32, 48) and item["masks"].dtype == torch.float32
    assert -1.0 <= item["frames"].min() and item["frames"].max() <= 1.0 and item["frames"].std() > 0.05
    assert set(item["masks"].unique().tolist()) == {0.0, 1.0}
    assert item["video_id"] == "synth_001" and 0 <= item["start"] <= 14 - 8


def test_dataset_determinism_and_epochs(synth_root: Path) -> None:
    ds = VideoClipDataset(synth_root, num_frames=4, size=(32, 48), seed=5, samples_per_epoch=6)
    assert len(ds) == 6
    a, b = ds[2], ds[2]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])
    draws = {(ds[i]["video_id"], ds[i]["start"], float(ds[i]["masks"].sum())) for i in range(6)}
    ds.set_epoch(1)
    other = {(ds[i]["video_id"], ds[i]["start"], float(ds[i]["masks"].sum())) for i in range(6)}
    assert draws != other
    ds.set_epoch(0)
    assert torch.equal(ds[2]["masks"], a["masks"])


def test_dataset_hflip_and_reverse(synth_root: Path) -> None:
    kw = dict(num_frames=6, size=(32, 48), seed=3)
    base = VideoClipDataset(synth_root, hflip_prob=0.0, reverse_prob=0.0, **kw)[0]
    flip = VideoClipDataset(synth_root, hflip_prob=1.0, reverse_prob=0.0, **kw)[0]
    rev = VideoClipDataset(synth_root, hflip_prob=0.0, reverse_prob=1.0, **kw)[0]
    assert base["start"] == flip["start"] == rev["start"]
    assert torch.equal(flip["frames"], base["frames"].flip(-1))
    assert torch.equal(flip["masks"], base["masks"].flip(-1))
    assert torch.equal(rev["frames"], base["frames"].flip(0))
    assert torch.equal(rev["masks"], base["masks"].flip(0))
    assert not torch.equal(rev["frames"], base["frames"])


def test_dataset_frames_match_files(synth_root: Path) -> None:
    ds = VideoClipDataset(synth_root, num_frames=3, frame_stride=(2, 3), size=(40, 72), hflip_prob=0.0, seed=0)
    item = ds[0]
    assert item["stride"] in (2, 3)
    frame_path = synth_root / "JPEGImages" / "synth_000" / f"{item['start'] + item['stride']:05d}.jpg"
    expect = np.asarray(Image.open(frame_path).convert("RGB")).astype(np.float32) / 127.5 - 1.0
    got = item["frames"][1].permute(1, 2, 0).numpy()
    assert np.abs(got - expect).mean() < 0.02  # same frame (decoder rounding only)


def test_dataset_object_masks_follow_annotation(synth_root: Path) -> None:
    masks = {"probs": {"objects": 1.0, "rectangles": 1e-9}, "objects": {"dilate_iters": 0}}
    ds = VideoClipDataset(synth_root, num_frames=4, size=(40, 72), hflip_prob=0.0, masks=masks, seed=0)
    item = ds[0]
    ann = read_annotation(synth_root / "Annotations" / "synth_000" / f"{item['start']:05d}.png")
    assert np.array_equal(item["masks"][0, 0].numpy(), (ann > 0).astype(np.float32))


def test_dataset_video_list_and_errors(synth_root: Path, tmp_path: Path) -> None:
    lst = tmp_path / "ids.txt"
    lst.write_text("# train ids\nsynth_002\n\nsynth_000\n")
    ds = VideoClipDataset(synth_root, num_frames=4, size=(16, 16), video_list=lst)
    assert [v for v, _ in ds.videos] == ["synth_002", "synth_000"]
    lst.write_text("synth_999\n")
    with pytest.raises(InputError, match="synth_999"):
        VideoClipDataset(synth_root, num_frames=4, video_list=lst)
    with pytest.raises(InputError, match="JPEGImages"):
        VideoClipDataset(tmp_path / "nowhere")
    (tmp_path / "empty" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(InputError, match="empty"):
        VideoClipDataset(tmp_path / "empty")
    with pytest.raises(InputError, match="15"):
        VideoClipDataset(synth_root, num_frames=15)  # every video too short
    with pytest.raises(ConfigError):
        VideoClipDataset(synth_root, num_frames=4, frame_stride=(3, 2))
    with pytest.raises(ConfigError, match="prob"):
        VideoClipDataset(synth_root, num_frames=4, masks={"prob": {"blobs": 1.0}})


# ---------------------------------------------------------------- synthetic dataset


def test_synthetic_script_writes_layout(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    cmd = [sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), str(out), "--videos", "3",
           "--frames", "9", "--size", "32x48", "--seed", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    vids = sorted(p.name for p in (out / "JPEGImages").iterdir())
    assert vids == ["synth_000", "synth_001", "synth_002"]
    assert len(list((out / "JPEGImages" / "synth_000").glob("*.jpg"))) == 9
    assert len(list((out / "JPEGImages" / "synth_002").glob("*.jpg"))) == 3  # the short video
    img = Image.open(out / "JPEGImages" / "synth_000" / "00000.jpg")
    assert img.size == (48, 32)
    ann = Image.open(out / "Annotations" / "synth_000" / "00008.png")
    assert ann.mode == "P" and set(np.unique(np.asarray(ann))) == {0, 1}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--overwrite" in res.stderr  # refuses to clobber


def test_synthetic_background_moves_with_known_velocity(tmp_path: Path) -> None:
    meta = make_synthetic_dataset(tmp_path, num_videos=1, num_frames=4, size=(48, 64), seed=0, num_short=0)
    vx, vy = meta["videos"]["synth_000"]["background_velocity_xy"]
    f0, f1 = (np.asarray(Image.open(tmp_path / "JPEGImages" / "synth_000" / f"{t:05d}.jpg")).astype(np.float32) for t in (0, 3))
    ann0 = read_annotation(tmp_path / "Annotations" / "synth_000" / "00000.png")
    ann1 = read_annotation(tmp_path / "Annotations" / "synth_000" / "00003.png")
    flow = torch.tensor([3 * vx, 3 * vy], dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, 48, 64)

    # Background content at p in frame 0 is at p + 3v in frame 3: warping frame 3 by +3v recovers frame 0.
    warped = flow_warp(torch.from_numpy(f1).permute(2, 0, 1)[None], flow)[0].permute(1, 2, 0).numpy()
    valid = (ann0 == 0) & (ann1 == 0)
    valid[:8], valid[-8:], valid[:, :8], valid[:, -8:] = False, False, False, False
    err_true = np.abs(warped - f0)[valid].mean()
    err_still = np.abs(f1 - f0)[valid].mean()
    assert err_true < 3.0 and err_true < 0.5 * err_still
