"""Tiny synthetic datasets: panning textures with a moving object, known motion.

Two layouts: training (YouTube-VOS: `JPEGImages/` + object `Annotations/`) and evaluation (DAVIS test:
`JPEGImages/` + `test_masks/` holding moving or stationary rectangles, read by scripts/evaluate.py).
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from fffvdi.data.masks import moving_rectangles
from fffvdi.errors import InputError

# DAVIS / YouTube-VOS palette for ids 0 (background) and 1 (first object); the rest stays black.
PALETTE = [0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254
# layout -> the folder next to JPEGImages/: object ids for training, hole masks for evaluation.
LAYOUTS = {"train": "Annotations", "eval": "test_masks"}


def smooth_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colourful noise (three octaves of upsampled random values), uint8 `[H, W, 3]`."""
    acc = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((32, 1.0), (12, 0.5), (4, 0.25)):
        small = rng.uniform(0, 1, (max(height // cell, 2), max(width // cell, 2), 3)).astype(np.float32)
        acc += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    acc -= acc.min()
    return (255 * acc / max(float(acc.max()), 1e-6)).astype(np.uint8)


def render_video(
    num_frames: int, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Frames RGB uint8 `[F, H, W, 3]`, object ids uint8 `[F, H, W]` (1 = object) and the motion used."""
    angle = rng.uniform(0, 2 * math.pi)
    vel = np.array([math.cos(angle), math.sin(angle)]) * rng.uniform(0.5, 2.0)  # image motion of the background
    margin = int(math.ceil(np.abs(vel).max() * max(num_frames - 1, 0))) + 4
    texture = smooth_texture(height + 2 * margin, width + 2 * margin, rng)
    centre = np.array([texture.shape[1], texture.shape[0]]) / 2.0 - 0.5  # (x, y) of the first window

    axes = (max(int(rng.uniform(0.1, 0.2) * width), 2), max(int(rng.uniform(0.1, 0.2) * height), 2))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    pos = np.array([rng.uniform(axes[0], width - axes[0]), rng.uniform(axes[1], height - axes[1])])
    obj_angle = rng.uniform(0, 2 * math.pi)
    obj_vel = np.array([math.cos(obj_angle), math.sin(obj_angle)]) * rng.uniform(1.0, 3.0)
    obj_vel0 = obj_vel.copy()

    frames = np.empty((num_frames, height, width, 3), np.uint8)
    ids = np.zeros((num_frames, height, width), np.uint8)
    for t in range(num_frames):
        # The camera window moves by -vel so that scene content moves by +vel in the image.
        cx, cy = centre - vel * t
        frame = cv2.getRectSubPix(texture, (width, height), (float(cx), float(cy)))
        centre_px = (int(round(pos[0])), int(round(pos[1])))
        cv2.ellipse(frame, centre_px, axes, 0, 0, 360, colour, thickness=-1)
        cv2.ellipse(ids[t], centre_px, axes, 0, 0, 360, 1, thickness=-1)
        frames[t] = frame
        pos = pos + obj_vel
        for k, (lo, hi) in enumerate(((axes[0], width - axes[0]), (axes[1], height - axes[1]))):
            if not lo <= pos[k] <= hi:  # bounce off the borders
                obj_vel[k] = -obj_vel[k]
                pos[k] = min(max(pos[k], lo), hi)
    motion = {
        "num_frames": num_frames,
        "background_velocity_xy": [float(v) for v in vel],
        "object_initial_velocity_xy": [float(v) for v in obj_vel0],
        "object_axes_xy": list(axes),
        "object_colour_rgb": list(colour),
    }
    return frames, ids, motion


def rectangle_masks(
    num_frames: int, height: int, width: int, rng: np.random.Generator, moving: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """Test masks uint8 `[F, H, W]` in {0, 1}: one rectangle per frame (a training-mask rectangle of constant size
    and speed), moving and bouncing at the borders, or stationary; and its description."""
    speed = (1.0, 3.0) if moving else (0.0, 0.0)
    masks = moving_rectangles(num_frames, height, width, rng, side_range=(0.15, 0.3), size_jitter=0.0,
                              speed_range=speed, accel_std=0.0)[:, 0]
    return masks, {"moving": moving}


def make_synthetic_dataset(
    out_dir: str | Path,
    num_videos: int = 4,
    num_frames: int = 30,
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
    num_short: int = 1,
    short_frames: int | None = None,
    overwrite: bool = False,
    layout: str = "train",
) -> dict[str, Any]:
    """Write `JPEGImages/`, `Annotations/` (or `test_masks/`) and `synthetic_meta.json` under `out_dir`; return the metadata.

    The last `num_short` videos have `short_frames` frames (default `max(2, num_frames // 3)`) so that
    loaders can exercise their skip logic. `layout="eval"` writes `test_masks/` (a rectangle per frame,
    moving in even-numbered videos, stationary in odd ones) instead of `Annotations/`.
    """
    out = Path(out_dir)
    height, width = size
    if layout not in LAYOUTS:
        raise InputError(f"synthetic dataset layout {layout!r} is unknown; use one of {', '.join(LAYOUTS)}")
    if num_videos < 1 or num_frames < 1 or height < 8 or width < 8:
        raise InputError(f"synthetic dataset needs >= 1 video, >= 1 frame and size >= 8x8; got {num_videos}, {num_frames}, {size}")
    if num_short < 0 or num_short > num_videos:
        raise InputError(f"synthetic dataset: {num_short} short videos asked of {num_videos}; pass 0..{num_videos} (--short)")
    label_dir = LAYOUTS[layout]
    for sub in ("JPEGImages", label_dir):
        if (out / sub).exists() and any((out / sub).iterdir()):
            if not overwrite:
                raise InputError(f"{out / sub} is not empty; choose a new output folder or pass overwrite (--overwrite)")
            shutil.rmtree(out / sub)
    short = short_frames if short_frames is not None else max(2, num_frames // 3)
    meta: dict[str, Any] = {"size_hw": [height, width], "seed": seed, "layout": layout, "videos": {}}
    for i in range(num_videos):
        vid = f"synth_{i:03d}"
        n = short if i >= num_videos - num_short else num_frames
        frames, ids, motion = render_video(n, height, width, np.random.default_rng([seed, i]))
        if layout == "eval":
            # Own generator: the frames stay those of the training layout for the same seed.
            holes, motion["test_mask"] = rectangle_masks(n, height, width, np.random.default_rng([seed, i, 1]), moving=i % 2 == 0)
        (out / "JPEGImages" / vid).mkdir(parents=True, exist_ok=True)
        (out / label_dir / vid).mkdir(parents=True, exist_ok=True)
        for t in range(n):
            name = f"{t:05d}"
            bgr = cv2.cvtColor(frames[t], cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(out / "JPEGImages" / vid / f"{name}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if layout == "eval":
                cv2.imwrite(str(out / label_dir / vid / f"{name}.png"), holes[t] * 255)  # grey 0/255, as DAVIS test masks
                continue
            ann = Image.fromarray(ids[t])
            ann.putpalette(PALETTE)  # palette PNG like DAVIS / YouTube-VOS: pixel value = object id
            ann.save(out / label_dir / vid / f"{name}.png")
        meta["videos"][vid] = motion
    (out / "synthetic_meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta
