"""Spatial fillers per frame: OpenCV Telea (the baseline), Navier-Stokes, and the membrane fill that `propagate` uses
where no frame shows a pixel (`propagate.spatial`)."""
from __future__ import annotations

from typing import Optional, Union

import cv2
import numpy as np
import torch

from fffvdi.errors import InputError
from fffvdi.flow.membrane import solve_in_hole

ArrayLike = Union[np.ndarray, torch.Tensor]


def as_clip_arrays(frames: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Frames -> uint8 `[F, H, W, 3]`, masks -> bool `[F, H, W]`; InputError on mismatch."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    frames, masks = np.asarray(frames), np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if frames.ndim != 4 or frames.shape[-1] != 3 or masks.shape != frames.shape[:3]:
        raise InputError(
            f"baselines need frames [F, H, W, 3] uint8 and masks [F, H, W], got {frames.shape} and {masks.shape}"
        )
    if frames.dtype != np.uint8:
        raise InputError(f"baselines need uint8 frames (0..255), got dtype {frames.dtype}; convert before calling")
    return frames, masks > 0


# Spatial fillers: OpenCV's Telea and Navier-Stokes, and the membrane (harmonic) fill: each hole pixel the mean of
# its four neighbours, solved exactly. The membrane has no texture and no streaks; on holes nothing ever reveals it is
# closer to the truth on average and far steadier from frame to frame (README, propagate on real footage).
SPATIAL = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS, "membrane": None}
NO_CONTENT = 128  # value of a frame with no known pixel and nothing to borrow from (mid-gray, never the input)


def telea_frame(frame: np.ndarray, hole: np.ndarray, radius: int = 3, method: str = "telea") -> np.ndarray:
    """Telea (or `method="ns"` / `"membrane"`) fill of `hole [H, W]` in a uint8 frame `[H, W, 3]`; a copy when no hole.

    A frame that is all hole has nothing to fill from (OpenCV would hand back the hidden input):
    it becomes mid-gray; video-level callers borrow a neighbouring frame's content instead.
    """
    hole = np.asarray(hole).astype(bool)  # a {0, 1} uint8 mask would index wrongly with `~` below
    if not hole.any():
        return frame.copy()
    if hole.all():
        return np.full_like(frame, NO_CONTENT)
    if method == "membrane":
        return membrane_frame(frame, hole)
    out = cv2.inpaint(np.ascontiguousarray(frame), hole.astype(np.uint8), radius, SPATIAL[method])
    out[~hole] = frame[~hole]  # Telea only writes inside the mask; make that a guarantee
    return out


def fill_unrevealed(
    result: np.ndarray, frame: np.ndarray, hole: np.ndarray, rest: np.ndarray, sources: Optional[np.ndarray] = None,
    radius: int = 3, method: str = "membrane",
) -> np.ndarray:
    """Spatial fill of `rest [H, W]`, the pixels of `hole` that no frame showed, in `result` uint8 `[H, W, 3]`.

    `sources [H, W]` (default: `hole`) is where no frame may be read: with holes grown by mask.dilate, `hole` minus
    its outer ring (`source_hole`). The part of `rest` inside it is filled first, bordered by `frame`'s own ring: the
    pixels that are read in every other frame, nearer the truth than what was propagated onto the ring. The ring
    pixels left are filled last, bordered by that fill; with no readable ring this is one fill of `rest`.
    """
    inner = hole if sources is None else sources
    ring, first = hole & ~inner, rest & inner
    if ring.any() and first.any():
        shown = result.copy()
        shown[ring] = frame[ring]
        result = np.where(first[..., None], telea_frame(shown, first, radius, method), result)
        rest = rest & ~first
    return telea_frame(result, rest, radius, method)


def hole_box(hole: np.ndarray, margin: int, size: tuple[int, int]) -> Optional[tuple[int, int, int, int]]:
    """Bounding box (y0, x0, y1, x1) of `hole` grown by `margin`, clipped to `size`; None if no hole."""
    ys, xs = np.nonzero(hole.any(1)), np.nonzero(hole.any(0))
    if ys[0].size == 0:
        return None
    h, w = size
    return (max(int(ys[0][0]) - margin, 0), max(int(xs[0][0]) - margin, 0),
            min(int(ys[0][-1]) + margin + 1, h), min(int(xs[0][-1]) + margin + 1, w))


def membrane_frame(frame: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Membrane fill of `hole [H, W]` in a uint8 frame `[H, W, 3]` (some pixel known): solved in the hole's box."""
    y0, x0, y1, x1 = hole_box(hole, 1, hole.shape)
    box = hole[y0:y1, x0:x1]  # every hole pixel's neighbours are inside: each piece meets a known pixel
    out = frame.copy()
    solved = solve_in_hole(frame[y0:y1, x0:x1].astype(np.float64), box)
    out[y0:y1, x0:x1][box] = np.clip(np.rint(solved[box]), 0, 255).astype(np.uint8)
    return out


def telea_inpaint(
    frames: ArrayLike, masks: ArrayLike, radius: int = 3, fallback: Optional[np.ndarray] = None
) -> np.ndarray:
    """Per-frame spatial inpainting (OpenCV Telea): uint8 `[F, H, W, 3]`, unchanged outside the mask.

    A frame that is all hole takes the result of the nearest frame with visible pixels (the earlier
    one on a tie), or `fallback [H, W, 3]` when no frame has any (else mid-gray).
    """
    frames, masks = as_clip_arrays(frames, masks)
    out = np.stack([telea_frame(f, m, radius) for f, m in zip(frames, masks)])
    full = masks.reshape(len(masks), -1).all(1)
    seen = np.flatnonzero(~full)
    for i in np.flatnonzero(full):
        if seen.size:
            out[i] = out[seen[np.argmin(np.abs(seen - i))]]
        elif fallback is not None:
            out[i] = fallback
    return out
