"""Training hole masks: moving rectangles, free-form blobs, object masks, the authors' boxes, and their mixture.

Every generator takes a numpy `Generator` (never the global RNG) and returns uint8 `[F, 1, H, W]`
with values in {0, 1}, where 1 marks the hole to inpaint.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from fffvdi.data.official_masks import official_box
from fffvdi.errors import ConfigError

# data.masks.probs keys: moving_rectangles | free_form_blob | object_masks | official_box (the release's generator).
# New kinds go last: the order fixes which kind a draw picks, so appending keeps older configs' draws unchanged.
MASK_KINDS = ("rectangles", "blobs", "objects", "official")
SYNTHETIC_KINDS = ("rectangles", "blobs", "official")  # kinds that need no annotations


def _bounce(pos: float, vel: float, lo: float, hi: float) -> tuple[float, float]:
    """Reflect a 1-D position (and its velocity) back into [lo, hi]."""
    if hi <= lo:
        return lo, vel
    for _ in range(4):  # a few reflections cover any step shorter than the interval
        if pos < lo:
            pos, vel = 2 * lo - pos, abs(vel)
        elif pos > hi:
            pos, vel = 2 * hi - pos, -abs(vel)
        else:
            break
    return min(max(pos, lo), hi), vel


def _clip_speed(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Rescale a 2-D velocity so its norm lies in [lo, hi]."""
    speed = float(np.hypot(*v))
    if speed < 1e-8:
        return np.array([lo, 0.0])
    return v * (min(max(speed, lo), hi) / speed)


def moving_rectangles(
    num_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    side_range: tuple[float, float] = (0.2, 0.8),
    size_jitter: float = 0.1,
    speed_range: tuple[float, float] = (1.0, 3.0),
    accel_std: float = 0.5,
) -> np.ndarray:
    """One rectangle (sides `side_range` of each image side) moving with jittered velocity, bouncing at borders."""
    base_h = rng.uniform(*side_range) * height
    base_w = rng.uniform(*side_range) * width
    # Size oscillates +-size_jitter around the base with a random period and phase.
    period = rng.uniform(8.0, 24.0)
    phase = rng.uniform(0.0, 2 * math.pi)
    angle = rng.uniform(0.0, 2 * math.pi)
    vel = np.array([math.cos(angle), math.sin(angle)]) * rng.uniform(*speed_range)  # (vx, vy) px/frame
    max_h, max_w = base_h * (1 + size_jitter), base_w * (1 + size_jitter)
    cx = rng.uniform(max_w / 2, max(width - max_w / 2, max_w / 2))
    cy = rng.uniform(max_h / 2, max(height - max_h / 2, max_h / 2))

    masks = np.zeros((num_frames, 1, height, width), np.uint8)
    for t in range(num_frames):
        scale = 1.0 + size_jitter * math.sin(2 * math.pi * t / period + phase)
        rh, rw = max(base_h * scale, 1.0), max(base_w * scale, 1.0)
        cx, vel[0] = _bounce(cx, vel[0], rw / 2, width - rw / 2)
        cy, vel[1] = _bounce(cy, vel[1], rh / 2, height - rh / 2)
        x0, y0 = int(round(cx - rw / 2)), int(round(cy - rh / 2))
        x1, y1 = max(int(round(cx + rw / 2)), x0 + 1), max(int(round(cy + rh / 2)), y0 + 1)
        masks[t, 0, max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)] = 1
        # Gaussian acceleration, speed kept in range so the hole never stalls.
        vel = _clip_speed(vel + rng.normal(0.0, accel_std, 2), *speed_range)
        cx, cy = cx + vel[0], cy + vel[1]
    return masks


def _blob_outline(rng: np.random.Generator, num_vertices: int, min_radius: float, samples: int = 16) -> np.ndarray:
    """Closed smooth outline `[N, 2]` in [0, 1]^2: quadratic Bezier arcs through a random star polygon."""
    angles = np.sort(rng.uniform(0.0, 2 * math.pi, num_vertices))
    radii = rng.uniform(min_radius, 1.0, num_vertices)
    verts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)  # [V, 2]
    mids = (verts + np.roll(verts, -1, axis=0)) / 2  # arc i runs mids[i-1] -> mids[i] with control verts[i]
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]  # [S, 1]
    arcs = [
        (1 - t) ** 2 * mids[i - 1] + 2 * (1 - t) * t * verts[i] + t**2 * mids[i] for i in range(num_vertices)
    ]
    pts = np.concatenate(arcs, axis=0)
    pts = pts - pts.min(axis=0)
    return pts / np.maximum(pts.max(axis=0), 1e-8)  # stretch to fill the unit box exactly


def free_form_blob(
    num_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    stationary_prob: float = 0.5,
    side_range: tuple[float, float] = (1 / 3, 1.0),
    vertex_range: tuple[int, int] = (6, 8),
    speed_range: tuple[float, float] = (1.0, 3.0),
    turn_std: float = 0.5,
    move_room: float = 0.1,
) -> np.ndarray:
    """A smooth random blob whose bounding box spans `side_range` of each side; stationary or random-walking.

    Following ProPainter, the blob's bounding box is 1/3 up to the full frame per side, so the hole covers
    roughly 5-80 % of the frame. Moving blobs keep at least `move_room` of each side free to move in and
    bounce inside the frame; their velocity turns by a gaussian angle and changes speed every frame.
    """
    moving = rng.uniform() >= stationary_prob
    hi = min(side_range[1], 1.0 - move_room) if moving else side_range[1]
    lo = min(side_range[0], hi)
    box_h = max(int(round(rng.uniform(lo, hi) * height)), 1)
    box_w = max(int(round(rng.uniform(lo, hi) * width)), 1)
    outline = _blob_outline(rng, int(rng.integers(vertex_range[0], vertex_range[1] + 1)), rng.uniform(0.5, 0.8))
    outline = np.round(outline * np.array([box_w - 1, box_h - 1])).astype(np.int32)  # [N, 2] px inside the box

    def draw(x: float, y: float) -> np.ndarray:
        frame = np.zeros((height, width), np.uint8)
        pts = outline + np.array([round(x), round(y)], np.int32)  # whole-pixel shifts keep the shape exact
        cv2.fillPoly(frame, [pts], 1)
        return frame

    x, y = rng.uniform(0, width - box_w), rng.uniform(0, height - box_h)
    if not moving:
        return np.broadcast_to(draw(x, y), (num_frames, 1, height, width)).copy()

    angle, speed = rng.uniform(0.0, 2 * math.pi), rng.uniform(*speed_range)
    masks = np.zeros((num_frames, 1, height, width), np.uint8)
    for t in range(num_frames):
        masks[t, 0] = draw(x, y)
        angle += rng.normal(0.0, turn_std)
        speed = float(np.clip(speed + rng.normal(0.0, 0.5), *speed_range))
        vx, vy = speed * math.cos(angle), speed * math.sin(angle)
        x, vx = _bounce(x + vx, vx, 0.0, float(width - box_w))
        y, vy = _bounce(y + vy, vy, 0.0, float(height - box_h))
        angle = math.atan2(vy, vx)  # keep the reflected heading
    return masks


def object_masks(
    annotations: np.ndarray,
    rng: np.random.Generator,
    mode: str = "dilate",
    dilate_iters: int = 4,
    select: str = "one",
) -> np.ndarray:
    """Holes from object annotations `[F, H, W]` (ids > 0): one random object or all, dilated or boxed."""
    if mode not in ("dilate", "bbox"):
        raise ConfigError(f"object mask mode={mode!r} is unknown; use 'dilate' or 'bbox'")
    if select not in ("one", "all"):
        raise ConfigError(f"object mask select={select!r} is unknown; use 'one' or 'all'")
    annotations = np.asarray(annotations)
    ids = np.unique(annotations)
    ids = ids[ids > 0]
    f, h, w = annotations.shape
    masks = np.zeros((f, 1, h, w), np.uint8)
    if ids.size == 0:
        return masks
    chosen = ids if select == "all" else ids[rng.integers(ids.size)][None]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    for t in range(f):
        if mode == "dilate":
            frame = np.isin(annotations[t], chosen).astype(np.uint8)
        else:
            frame = np.zeros((h, w), np.uint8)
            for obj in chosen:  # one box per object so distant objects do not merge into one huge box
                ys, xs = np.nonzero(annotations[t] == obj)
                if ys.size:
                    frame[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
        if dilate_iters > 0:
            frame = cv2.dilate(frame, kernel, iterations=dilate_iters)
        masks[t, 0] = frame
    return masks


class MaskGenerator:
    """Draws a mask kind by configured probabilities and generates it; only the official kind may be empty."""

    def __init__(
        self,
        probs: Mapping[str, float] | None = None,
        rectangles: Mapping[str, Any] | None = None,
        blobs: Mapping[str, Any] | None = None,
        objects: Mapping[str, Any] | None = None,
        official: Mapping[str, Any] | None = None,
        min_area: float = 0.005,
        max_tries: int = 10,
    ) -> None:
        probs = dict(probs if probs is not None else {"rectangles": 0.5, "blobs": 0.5})
        unknown = sorted(set(probs) - set(MASK_KINDS))
        if unknown:
            raise ConfigError(f"masks.probs has unknown kinds {unknown}; use keys from {list(MASK_KINDS)}")
        if any(not isinstance(p, (int, float)) or p < 0 for p in probs.values()):
            raise ConfigError(f"masks.probs={probs} must map kinds to non-negative numbers")
        if sum(probs.get(k, 0.0) for k in SYNTHETIC_KINDS) <= 0:
            raise ConfigError(f"masks.probs needs one of {', '.join(SYNTHETIC_KINDS)} > 0 (objects need annotations, "
                              "absent on some videos)")
        self.probs = {k: float(probs.get(k, 0.0)) for k in MASK_KINDS}
        self.kwargs = {"rectangles": dict(rectangles or {}), "blobs": dict(blobs or {}), "objects": dict(objects or {}),
                       "official": dict(official or {})}
        self.min_area = float(min_area)
        self.max_tries = int(max_tries)

    @property
    def uses_objects(self) -> bool:
        """True when object masks can be drawn (so callers know whether to load annotations)."""
        return self.probs["objects"] > 0

    def sample_kind(self, rng: np.random.Generator, has_annotations: bool) -> str:
        """Pick a mask kind; without annotations the object share is renormalised away."""
        kinds = [k for k in MASK_KINDS if self.probs[k] > 0 and (k != "objects" or has_annotations)]
        weights = np.array([self.probs[k] for k in kinds])
        return kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]

    def __call__(
        self, num_frames: int, height: int, width: int, rng: np.random.Generator, annotations: np.ndarray | None = None
    ) -> np.ndarray:
        """Generate uint8 `[F, 1, H, W]` holes (1 = hole) covering at least `min_area` of the clip (official: any)."""
        has_ann = annotations is not None
        masks = None
        for _ in range(self.max_tries):
            kind = self.sample_kind(rng, has_ann)
            if kind == "rectangles":
                masks = moving_rectangles(num_frames, height, width, rng, **self.kwargs["rectangles"])
            elif kind == "blobs":
                masks = free_form_blob(num_frames, height, width, rng, **self.kwargs["blobs"])
            elif kind == "official":
                # Returned as drawn, empty or not: the release trains on its empty clips too (about 9 % at 512x256).
                return official_box(num_frames, height, width, rng, **self.kwargs["official"])
            else:
                masks = object_masks(annotations, rng, **self.kwargs["objects"])
                if masks.shape[0] != num_frames or masks.shape[2:] != (height, width):
                    raise ConfigError(f"annotations shape {masks.shape} does not match clip {num_frames}x{height}x{width}")
            if masks.mean() >= self.min_area:
                return masks
            has_ann = False  # tiny or absent objects: retry with the synthetic kinds only
        # Rectangles are at least 20 % of each side by default, so this fallback is never empty.
        return moving_rectangles(num_frames, height, width, rng, **self.kwargs["rectangles"])
