"""The authors' training holes (FFF-VDI release, utils.py `create_random_square_with_random_motion`): one box per clip
with a breathing size and a random walk, reproduced with its quirks and its order of random draws.

The quirks kept on purpose (`swap_limits=True`, the release's behaviour):
- the position steps BEFORE each frame is drawn, so frame 0 already sits one step away from the drawn start;
- the bounds test and the clip compare the row with `H - box width` and the column with `W - box height` (the
  release unpacks its (height, width) size the other way round);
- a negative limit (a box wider than the frame is high) is returned by the clip as is, so the box is pasted partly
  or wholly above the frame: at 512x256 about 9 % of the clips are empty in every frame.
Random numbers come from the numpy `Generator` passed in (the release mixes Python's `random` and numpy's global RNG).
"""
from __future__ import annotations

import math

import numpy as np

from fffvdi.errors import ConfigError


def _box_side(base: int, weight: float, t: int, period: int) -> int:
    """A side `base` breathing by `1 + weight (1 + sin(2 pi t / period)) / 2`, truncated as the release does."""
    return int(base + base * weight * (1 + math.sin(2 * math.pi * t / period)) / 2)


def official_box(
    num_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    side_range: tuple[float, float] = (0.2, 0.8),
    size_jitter: float = 0.1,
    speed_range: tuple[float, float] = (1.0, 3.0),
    speed_std: float = 1.5,
    turn_std: float = 0.25,
    swap_limits: bool = True,
) -> np.ndarray:
    """One box moving as in the authors' training masks; uint8 `[F, 1, H, W]`, 1 = hole, possibly empty.

    side_range: box sides as fractions of the frame's sides (whole pixels, both ends included).
    size_jitter: each side's breathing amplitude k ~ U(-size_jitter, size_jitter), one k per side, period = the clip.
    speed_range: initial speed (px/frame), uniform; the heading is uniform in [0, 2 pi).
    speed_std, turn_std: per-frame gaussian changes of the speed and heading; speed_std also draws |N(0, std)|, the
      speed after a box leaves its limits (with a new uniform heading).
    swap_limits: True keeps the release's swapped limits and off-frame boxes; False limits the row by the box's
      height and the column by its width, keeping the box inside the frame when it fits.
    """
    lo, hi = side_range
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"official side_range={side_range!r} must satisfy 0 < lo <= hi <= 1")
    if num_frames < 1:
        raise ConfigError(f"official masks need num_frames >= 1, got {num_frames}")
    min_h, max_h = int(height * lo), int(height * hi)
    min_w, max_w = int(width * lo), int(width * hi)
    # The release's draws, in its order: base sides, one breathing weight per side, start, speed, heading.
    base_h = int(rng.integers(min_h, max_h, endpoint=True))
    base_w = int(rng.integers(min_w, max_w, endpoint=True))
    weight_h = rng.uniform(-size_jitter, size_jitter)
    weight_w = rng.uniform(-size_jitter, size_jitter)
    row = int(rng.integers(0, height - max_h, endpoint=True))
    col = int(rng.integers(0, width - max_w, endpoint=True))
    # The release calls numpy's uniform(3), i.e. low=3, high=1: the same law as U(1, 3) with one draw.
    speed = rng.uniform(*speed_range)
    angle = rng.uniform(0.0, 2 * math.pi)

    masks = np.zeros((num_frames, 1, height, width), np.uint8)
    for t in range(num_frames):
        box_h = _box_side(base_h, weight_h, t, num_frames)
        box_w = _box_side(base_w, weight_w, t, num_frames)
        row += int(speed * math.cos(angle))  # int() truncates toward zero, as the release
        col += int(speed * math.sin(angle))
        speed += rng.normal(0.0, speed_std)
        angle += rng.normal(0.0, turn_std)
        row_limit = height - (box_w if swap_limits else box_h)
        col_limit = width - (box_h if swap_limits else box_w)
        if row > row_limit or row < 0 or col > col_limit or col < 0:
            speed = abs(rng.normal(0.0, speed_std))
            angle = rng.uniform(0.0, 2 * math.pi)
        # np.clip's order of operations: a negative upper limit wins over the lower limit 0 and is returned.
        row = min(max(row, 0), row_limit)
        col = min(max(col, 0), col_limit)
        masks[t, 0, max(row, 0) : max(row + box_h, 0), max(col, 0) : max(col + box_w, 0)] = 1
    return masks
