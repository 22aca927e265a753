"""Mask-region crops for high-resolution inputs: plan a window's crop, run it, paste it back inside the mask.

A 1080p or 4K frame fitted whole onto a 1024x576 canvas is shrunk 2-4x, so the fill comes out blurry.
Per window, the crop is the bounding box of the union of the window's (already dilated) masks, grown
by a context margin, widened to the canvas aspect and shifted (then shrunk) into the frame. One crop
holds for the whole window (SVD needs one geometry per clip). The method sees only the crop, scaled
to its canvas, so everything it computes (flows, first-frame filling, DNA) is at the crop's scale;
its output is pasted back into the full frame inside the mask only.

Overlapping windows need no shared crop: `run_windows` anchors a window on the previous one's
pasted-back full-resolution output and cross-fades overlaps in full-resolution frame space, where
pixels outside every mask are the input's in both windows; each window's crop holds all of its own
masked pixels, so every pixel either window changes lies inside both crops' work.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from fffvdi.errors import ConfigError
from fffvdi.inpaint.windows import Sink, WindowFn

logger = logging.getLogger(__name__)

MIN_MARGIN = 32  # smallest context margin in source pixels: room for the flow estimator and the completer's ring
REGIONS = ("auto", "full", "crop")

# (y0, x0, y1, x1), end-exclusive
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Crop:
    """A rectangle of the frame: (top, left) corner and (height, width)."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices selecting the crop from `[..., H, W]` arrays."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def mask_box(masks: np.ndarray) -> Optional[Box]:
    """Bounding box of the union of `masks [T, H, W]` (any nonzero is hole); None if no pixel is set."""
    union = np.asarray(masks).reshape(-1, *masks.shape[-2:]).any(0)  # [H, W]
    rows, cols = np.nonzero(union.any(1))[0], np.nonzero(union.any(0))[0]
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def canvas_scale(size: tuple[int, int], canvas: tuple[int, int]) -> float:
    """Scale at which an (H, W) region appears on an (h, w) canvas when fitted whole (as `plan_placement`)."""
    return min(canvas[0] / size[0], canvas[1] / size[1])


def _place(center: float, length: int, limit: int) -> int:
    """Start of a `length` span centred on `center`, shifted into [0, limit).

    Centred on a box no longer than `length`, the span holds the box; shifting it into the frame keeps
    that, since the box lies in the frame too.
    """
    return min(max(int(math.floor(center - length / 2)), 0), limit - length)


def plan_crop(
    masks: np.ndarray, canvas: Optional[tuple[int, int]], context: float = 0.5, min_margin: int = MIN_MARGIN,
    min_size: tuple[int, int] = (0, 0),
) -> Optional[Crop]:
    """The crop for a window's `masks [T, H, W]`: None when no pixel is masked.

    The masks' box grows by `max(context * box side, min_margin)` on each side (and to at least `min_size`),
    widens to the aspect of `canvas (h, w)` (None: no aspect), moves into the frame and, only when the frame
    is too small, shrinks towards the frame's size; it always holds the whole masks' box of every frame.
    """
    frame_h, frame_w = masks.shape[-2:]
    box = mask_box(masks)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    bh, bw = y1 - y0, x1 - x0
    need_h = min(bh + 2 * max(math.ceil(context * bh), min_margin), frame_h)  # box + margins, as the frame allows
    need_w = min(bw + 2 * max(math.ceil(context * bw), min_margin), frame_w)
    h, w = max(need_h, min(min_size[0], frame_h)), max(need_w, min(min_size[1], frame_w))
    if canvas is not None:  # widen the short side to the canvas aspect, as far as the frame allows
        aspect = canvas[1] / canvas[0]
        if w / h < aspect:
            w = min(math.ceil(h * aspect), frame_w)
            if w / h < aspect:  # frame too narrow: trade height back, down to what the margins need
                h = max(need_h, min(h, math.floor(w / aspect)))
        else:
            h = min(math.ceil(w / aspect), frame_h)
            if w / h > aspect:
                w = max(need_w, min(w, math.floor(h * aspect)))
    top = _place((y0 + y1) / 2, h, frame_h)
    left = _place((x0 + x1) / 2, w, frame_w)
    return Crop(top, left, h, w)


def choose_region(
    region: str, masks: np.ndarray, canvas: Optional[tuple[int, int]], context: float = 0.5
) -> Optional[Crop]:
    """The crop a window runs on, or None for the full frame.

    `full`: None. `crop`: the planned crop (None when nothing is masked), scaled to the canvas up or down.
    `auto`: the crop grown to at least the canvas size (upscaling past native resolution adds no detail, so
    auto takes more context instead), used only when the canvas then sees it in more detail than the full
    frame: `min(crop scale, 1) > min(full-frame scale, 1)`. A frame that fits the canvas stays full.
    """
    if region not in REGIONS:
        raise ConfigError(f"window.region={region!r} is unknown; use one of {', '.join(REGIONS)}", key="window.region")
    if region == "full":
        return None
    if region == "crop":
        return plan_crop(masks, canvas, context)
    if canvas is None:
        raise ValueError("region=auto needs a canvas to compare scales against")
    crop = plan_crop(masks, canvas, context, min_size=canvas)
    if crop is None:
        return None
    gain = min(canvas_scale((crop.height, crop.width), canvas), 1.0) > min(canvas_scale(masks.shape[-2:], canvas), 1.0)
    return crop if gain else None


def paste(frames: np.ndarray, inpainted: np.ndarray, masks: np.ndarray, crop: Crop) -> np.ndarray:
    """`frames uint8 [T, H, W, 3]` with the crop's `inpainted [T, h, w, 3]` pasted inside `masks [T, H, W]` only."""
    rows, cols = crop.slices()
    out = frames.copy()
    hole = masks[:, rows, cols, None] > 0  # [T, h, w, 1]
    out[:, rows, cols] = np.where(hole, inpainted, frames[:, rows, cols])  # bit-identical outside the mask
    return out


def cropped(process: WindowFn, region: str, canvas: tuple[int, int], context: float = 0.5) -> WindowFn:
    """`process` run on each window's crop (per `choose_region`) and pasted back at full resolution."""
    if region == "full":
        return process

    def run(frames: np.ndarray, masks: np.ndarray, generator: torch.Generator) -> np.ndarray:
        crop = choose_region(region, masks, canvas, context)
        size = frames.shape[1:3]
        if crop is None or (crop.height, crop.width) == size:
            logger.debug("window region: full %dx%d (canvas scale %.3f)", size[1], size[0], canvas_scale(size, canvas))
            return process(frames, masks, generator)
        logger.debug("window region: crop %dx%d at (%d, %d) of %dx%d (canvas scale %.3f, full frame %.3f)",
                     crop.width, crop.height, crop.left, crop.top, size[1], size[0],
                     canvas_scale((crop.height, crop.width), canvas), canvas_scale(size, canvas))
        rows, cols = crop.slices()
        inpainted = process(np.ascontiguousarray(frames[:, rows, cols]), np.ascontiguousarray(masks[:, rows, cols]), generator)
        return paste(frames, inpainted, masks, crop)

    return run


def video_crop(read_masks: Callable[[int, int], np.ndarray], total: int, context: float, chunk: int = 16) -> Optional[Crop]:
    """One crop for a whole video (no canvas aspect): the union of all its masks plus the context margin."""
    union: Optional[np.ndarray] = None  # [H, W] bool
    for start in range(0, total, chunk):
        any_hole = (read_masks(start, min(start + chunk, total)) > 0).any(0)
        union = any_hole if union is None else union | any_hole
    return None if union is None else plan_crop(union[None], None, context)


def cropped_io(
    read_frames: Callable[[int, int], np.ndarray],
    read_masks: Callable[[int, int], np.ndarray],
    sink: Sink,
    crop: Crop,
) -> tuple[Callable, Callable, Callable]:
    """Readers of the crop only, and a sink pasting finished crops back into the full frames inside the mask."""
    rows, cols = crop.slices()

    def crop_frames(start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(read_frames(start, stop)[:, rows, cols])

    def crop_masks(start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(read_masks(start, stop)[:, rows, cols])

    def paste_sink(first: int, inpainted: np.ndarray) -> None:
        stop = first + len(inpainted)
        sink(first, paste(read_frames(first, stop), inpainted, read_masks(first, stop), crop))

    return crop_frames, crop_masks, paste_sink
