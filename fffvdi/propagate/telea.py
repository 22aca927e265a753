"""The spatial baseline: OpenCV Telea per frame (also what `propagate` falls back on where no frame shows a pixel)."""
from __future__ import annotations

from typing import Optional, Union

import cv2
import numpy as np
import torch

from fffvdi.errors import InputError

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


SPATIAL = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}  # OpenCV's two spatial fillers (Telea; Navier-Stokes)
NO_CONTENT = 128  # value of a frame with no known pixel and nothing to borrow from (mid-gray, never the input)


def telea_frame(frame: np.ndarray, hole: np.ndarray, radius: int = 3, method: str = "telea") -> np.ndarray:
    """OpenCV Telea (or `method="ns"`) fill of `hole [H, W]` in one uint8 frame `[H, W, 3]`; a copy when no hole.

    A frame that is all hole has nothing to fill from (OpenCV would hand back the hidden input):
    it becomes mid-gray; video-level callers borrow a neighbouring frame's content instead.
    """
    hole = np.asarray(hole).astype(bool)  # a {0, 1} uint8 mask would index wrongly with `~` below
    if not hole.any():
        return frame.copy()
    if hole.all():
        return np.full_like(frame, NO_CONTENT)
    out = cv2.inpaint(np.ascontiguousarray(frame), hole.astype(np.uint8), radius, SPATIAL[method])
    out[~hole] = frame[~hole]  # Telea only writes inside the mask; make that a guarantee
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
