"""Real-world-like motion cases with ground truth: camera pan or zoom, a moving object, an occluder to remove.

Each scene is a detailed background (several octaves of noise plus hard-edged shapes, like
footage) seen through a camera that pans (sub-pixel speeds too) and/or zooms, an independently
moving textured object that stays in the video, and a box of 1/8 of the width crossing the frame
that is to be removed (the mask, dilated by 2 px). Frames are rendered by resampling a 2x larger
canvas (cubic), so motion is continuous and the ground truth is the scene without the box.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SceneSpec:
    """Motion of one case; speeds in output pixels per frame."""

    name: str
    pan: tuple[float, float] = (0.0, 0.0)  # camera pan (dx, dy)
    zoom: float = 1.0  # scale factor per frame (1.004 = 0.4 % zoom-in per frame)
    object_speed: tuple[float, float] = (0.0, 0.0)  # the moving object that stays (0 = no object)
    box_speed: float = 3.0  # horizontal speed of the occluder that is removed


SCENES = (
    SceneSpec("pan_object_box", pan=(2.5, 0.4), object_speed=(-1.7, 0.6), box_speed=3.0),
    SceneSpec("subpixel_pan", pan=(0.37, 0.11), object_speed=(0.8, -0.3), box_speed=2.0),
    SceneSpec("zoom_box", zoom=1.006, pan=(0.5, 0.0), box_speed=4.0),
    SceneSpec("static_camera_fast_box", object_speed=(1.2, 0.0), box_speed=6.0),
)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """float32 `[h, w, 3]` in [0, 255]: noise octaves plus hard-edged rectangles and discs."""
    acc = np.zeros((h, w, 3), np.float32)
    for cell, weight in ((48, 1.0), (16, 0.6), (5, 0.35), (2, 0.15)):
        small = rng.uniform(0, 1, (max(h // cell, 2), max(w // cell, 2), 3)).astype(np.float32)
        acc += weight * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    acc = 255 * (acc - acc.min()) / max(float(acc.max() - acc.min()), 1e-6)
    for _ in range(int(h * w / 4000)):  # structures with sharp edges, as in real scenes
        colour = rng.uniform(0, 255, 3).tolist()
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        s = int(rng.integers(4, max(h // 10, 6)))
        if rng.random() < 0.5:
            cv2.rectangle(acc, (x, y), (x + s, y + int(rng.integers(2, s + 1))), colour, -1, cv2.LINE_AA)
        else:
            cv2.circle(acc, (x, y), s // 2, colour, -1, cv2.LINE_AA)
    return acc


def render_scene(
    spec: SceneSpec, n_frames: int = 40, size: tuple[int, int] = (240, 432), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(ground_truth uint8 [F, H, W, 3], masked_input uint8 [F, H, W, 3], masks bool [F, H, W])`."""
    rng = np.random.default_rng(seed)
    h, w = size
    big = 2  # the world canvas is sampled at 2x the output resolution
    span_x = abs(spec.pan[0]) * n_frames + w
    span_y = abs(spec.pan[1]) * n_frames + h
    world_h, world_w = int(span_y * 1.4) + 16, int(span_x * 1.4) + 16
    world = _background(world_h * big, world_w * big, rng)
    obj_size = (h // 4, w // 6)
    obj_tex = _background(obj_size[0] * big, obj_size[1] * big, rng)[..., ::-1].copy()
    box_w, box_h = max(w // 8, 4), int(h * 0.45)
    box_y = int(h * 0.3)
    box_colour = np.array([250, 30, 200], np.uint8)
    gt, masks = np.empty((n_frames, h, w, 3), np.uint8), np.zeros((n_frames, h, w), bool)
    cx0, cy0 = world_w / 2 - np.sign(spec.pan[0]) * (span_x - w) / 2, world_h / 2 - np.sign(spec.pan[1]) * (span_y - h) / 2
    for t in range(n_frames):
        scale = spec.zoom**t  # output pixels per world pixel
        cx, cy = cx0 + spec.pan[0] * t, cy0 + spec.pan[1] * t  # world point at the image centre
        # output (x, y) -> world canvas (big * (c + (x - w/2) / scale))
        a = big / scale
        m = np.array([[a, 0, big * cx - a * (w - 1) / 2], [0, a, big * cy - a * (h - 1) / 2]], np.float32)
        frame = cv2.warpAffine(world, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        if spec.object_speed != (0.0, 0.0):
            ox = w * 0.3 + spec.object_speed[0] * t
            oy = h * 0.55 + spec.object_speed[1] * t
            mo = np.array([[big, 0, -big * ox], [0, big, -big * oy]], np.float32)
            tex = cv2.warpAffine(obj_tex, mo, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
            cover = np.zeros((h, w), np.float32)
            cv2.ellipse(cover, ((ox + obj_size[1] / 2, oy + obj_size[0] / 2), (obj_size[1], obj_size[0]), 0), 1.0, -1, cv2.LINE_AA)
            frame = frame * (1 - cover[..., None]) + tex * cover[..., None]
        gt[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        bx = int(round(w * 0.1 + spec.box_speed * t)) % (w + box_w) - box_w
        masks[t, box_y : box_y + box_h, max(bx, 0) : max(bx + box_w, 0)] = True
    masks = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for m in masks])
    masked = gt.copy()
    masked[masks] = box_colour  # the object to remove; its colour must never reach the output
    return gt, masked, masks


def masked_psnr(pred: np.ndarray, gt: np.ndarray, masks: np.ndarray) -> float:
    """PSNR (peak 255) over every masked pixel of the clip, pooled."""
    err = (pred.astype(np.float64) - gt.astype(np.float64))[masks]
    return float(10 * np.log10(255.0**2 / max(float((err**2).mean()), 1e-10)))
