"""Never-revealed pixels filled once and carried along the flow (FGVC's key-frame idea), instead of anew per frame.

A hole pixel that no frame within the radius shows is filled spatially in the first frame where it occurs (the key
frame). In every later frame it takes the previous *finished* frame read at `p + flow_prev(p)`, so the fill moves
with the scene instead of being re-invented each frame (per-frame Telea flickers: its smear changes whenever the
hole's border does). The carried patch is pasted in the gradient domain (Poisson, seamless cloning): it keeps its own
gradients and meets the current frame's border, so lighting changes and new content at the border do not leave a seam.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from fffvdi.flow.membrane import STEPS, solve_in_hole
from fffvdi.flow.trace import FrameRecord

UNREVEALED = ("carry", "frame")  # carry: key-frame fill carried along the flow | frame: spatial fill in every frame


def carry_unrevealed(
    result: np.ndarray, left: np.ndarray, previous: Optional[np.ndarray], rec: Optional[FrameRecord]
) -> np.ndarray:
    """Fill `left [H, W]` of `result [H, W, 3]` uint8 from `previous` (frame t-1, finished) along `rec.flow_prev`.

    Returns the hole pixels still left (those whose flow leaves the image, or all when nothing can be carried).
    """
    if previous is None or rec is None or rec.flow_prev is None or not left.any():
        return left
    height, width = left.shape
    ys, xs = np.nonzero(left)
    y0, x0 = max(int(ys.min()) - 1, rec.top), max(int(xs.min()) - 1, rec.left)
    y1 = min(int(ys.max()) + 2, rec.top + rec.shape[0])
    x1 = min(int(xs.max()) + 2, rec.left + rec.shape[1])
    flow = rec.flow_prev[:, y0 - rec.top : y1 - rec.top, x0 - rec.left : x1 - rec.left]  # [2, h, w]
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    map_x, map_y = gx + flow[0], gy + flow[1]
    source = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float64)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    hole = left[y0:y1, x0:x1] & inside
    # A hole pixel on the box's edge has no neighbour beyond it; keep those for the spatial fill.
    hole[0, :] = hole[-1, :] = False
    hole[:, 0] = hole[:, -1] = False
    if not hole.any():
        return left
    guide = np.stack([source - np.roll(source, (-dy, -dx), axis=(0, 1)) for dy, dx in STEPS])  # [4, h, w, 3]
    solved = solve_in_hole(result[y0:y1, x0:x1], hole, guide=guide)
    box = result[y0:y1, x0:x1]
    box[hole] = np.clip(np.rint(solved[hole]), 0, 255).astype(np.uint8)
    still = left.copy()
    still[y0:y1, x0:x1] &= ~hole
    return still
