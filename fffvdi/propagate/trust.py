"""Where a completed flow can be trusted: inside a hole, only where the flows around it agree.

A completer fills a hole's flow from its border. When the border moves as one (a pan, a zoom, a still scene) the
fill is the scene's motion. When it does not (a person walking past one side of a fixed logo, a foreground edge
across the hole) the fill is a blend that is nobody's motion: a trajectory following it creeps through the hole and
leaves it at a place that never showed the hidden content, which reads worse than a spatial fill. So each hole pixel
looks at the first known pixel to its left, right, top and bottom; where those flows spread by more than
`propagate.trust` pixels, the completed flow there is distrusted and a trajectory stepping from it ends without a
source (`fffvdi.flow.trace`).
"""
from __future__ import annotations

import numpy as np


def _nearest_known(known: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    """Index along `axis` of the nearest known pixel before (or, `reverse`, after) each pixel; -1 where none."""
    n = known.shape[axis]
    shape = [1, 1]
    shape[axis] = n
    pos = np.arange(n).reshape(shape)
    if reverse:
        idx = np.where(known, n - 1 - pos, -1)
        idx = np.maximum.accumulate(np.flip(idx, axis), axis=axis)
        idx = np.flip(idx, axis)
        return np.where(idx >= 0, n - 1 - idx, -1)
    return np.maximum.accumulate(np.where(known, pos, -1), axis=axis)


def border_spread(flow: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`[H, W]` spread (pixels) of `flow [2, H, W]` over the nearest known pixels left/right/up/down of each pixel.

    The spread is the largest difference, over the two flow components, between the largest and smallest value
    seen on those sides (sides beyond the image are skipped). Zero outside `hole` and where fewer than two sides exist.
    """
    h, w = hole.shape
    known = ~hole
    rows = np.arange(h)[:, None].repeat(w, 1)
    cols = np.arange(w)[None, :].repeat(h, 0)
    samples, present = [], []
    for axis, reverse in ((1, False), (1, True), (0, False), (0, True)):
        idx = _nearest_known(known, axis, reverse)
        ok = idx >= 0
        at = np.where(ok, idx, 0)
        y, x = (rows, at) if axis == 1 else (at, cols)
        samples.append(flow[:, y, x])  # [2, H, W]
        present.append(ok)
    vals = np.stack(samples)  # [4, 2, H, W]
    have = np.stack(present)[:, None]  # [4, 1, H, W]
    hi = np.where(have, vals, -np.inf).max(0)
    lo = np.where(have, vals, np.inf).min(0)
    spread = (hi - lo).max(0)  # [H, W]
    enough = np.stack(present).sum(0) >= 2
    return np.where(hole & enough, spread, 0.0)


def trusted(flow: np.ndarray, hole: np.ndarray, limit: float) -> np.ndarray:
    """Bool `[H, W]`: False inside `hole` where the border flows spread by more than `limit` pixels."""
    return border_spread(flow, hole) <= limit
