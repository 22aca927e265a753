"""Oracle clip for mask tracking: a textured blob moving and growing over a textured panning background."""
from __future__ import annotations

import cv2
import numpy as np


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [h, w, 3] in [0, 255]: noise octaves and a few sharp discs (footage-like detail)."""
    acc = np.zeros((h, w, 3), np.float32)
    for cell, weight in ((32, 1.0), (10, 0.6), (4, 0.35)):
        small = rng.uniform(0, 1, (max(h // cell, 2), max(w // cell, 2), 3)).astype(np.float32)
        acc += weight * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    acc = 255 * (acc - acc.min()) / max(float(acc.max() - acc.min()), 1e-6)
    for _ in range(h * w // 3000):
        cv2.circle(acc, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(2, 8)),
                   rng.uniform(0, 255, 3).tolist(), -1, cv2.LINE_AA)
    return acc


def blob_scene(n_frames: int = 40, size: tuple[int, int] = (160, 256), seed: int = 0,
               pan: tuple[float, float] = (1.3, 0.4), start: tuple[float, float] = (70.0, 62.0),
               speed: tuple[float, float] = (2.6, 0.9), growth: float = 1.5, flat: bool = False):
    """`(frames uint8 [T, H, W, 3], objects bool [T, H, W])`: the object mask is every pixel the blob touches.

    The blob is an ellipse (radii 26 x 18 px) with a wavy outline, rotated 20 degrees, textured in its
    own warm colours (`flat`: one plain grey, where flow inside the object is guesswork); it moves by `speed` px/frame and scales linearly to `growth` x its size; the
    camera pans over the background by `pan` px/frame.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    bg = _texture(int(h + abs(pan[1]) * n_frames + 8), int(w + abs(pan[0]) * n_frames + 8), rng)
    tex = _texture(96, 96, rng)
    tex = np.stack([0.55 * tex[..., 0] + 110, 0.6 * tex[..., 1] + 40, 0.35 * tex[..., 2]], -1).astype(np.float32)  # warm, still detailed
    if flat:
        tex[:] = 128.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames, objects = np.empty((n_frames, h, w, 3), np.uint8), np.zeros((n_frames, h, w), bool)
    rot = np.deg2rad(20.0)
    for t in range(n_frames):
        m = np.float32([[1, 0, pan[0] * t], [0, 1, pan[1] * t]])  # output -> background canvas
        frame = cv2.warpAffine(bg, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        s = 1.0 + (growth - 1.0) * t / max(n_frames - 1, 1)
        cx, cy = start[0] + speed[0] * t, start[1] + speed[1] * t
        dx, dy = xx - cx, yy - cy
        lx = (np.cos(rot) * dx + np.sin(rot) * dy) / s  # object-local coordinates (unscaled pixels)
        ly = (-np.sin(rot) * dx + np.cos(rot) * dy) / s
        theta = np.arctan2(ly / 18.0, lx / 26.0)
        rho = np.hypot(lx / 26.0, ly / 18.0) / (1.0 + 0.12 * np.sin(3 * theta) + 0.06 * np.cos(5 * theta))
        dist = (rho - 1.0) * 22.0 * s  # approximate signed distance to the outline, output pixels
        alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        colour = cv2.remap(tex, (lx + 48).astype(np.float32), (ly + 48).astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames[t] = np.clip(frame * (1 - alpha) + colour * alpha, 0, 255).round().astype(np.uint8)
        objects[t] = alpha[..., 0] > 0
    return frames, objects
