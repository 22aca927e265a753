"""One annotation on one frame: a box `x,y,w,h` or a mask image, checked and turned into a bool mask `[H, W]`."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fffvdi.errors import InputError
from fffvdi.io.images import read_image
from fffvdi.io.masks import binarize


def parse_box(text: str) -> tuple[int, int, int, int]:
    """'x,y,w,h' (integers, pixels) -> (x, y, w, h); InputError naming the expected form otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        x, y, w, h = (int(round(float(p))) for p in parts)
    except ValueError:
        raise InputError(f"--box {text!r} is not x,y,w,h; give four numbers in pixels, e.g. --box 40,30,64,48") from None
    return x, y, w, h


def box_mask(box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Box `(x, y, w, h)` in pixels on a frame of `size` (H, W) -> bool `[H, W]`, True inside; InputError if empty or outside."""
    x, y, w, h = (int(v) for v in box)
    height, width = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise InputError(f"box {x},{y},{w},{h} is empty; width and height (the last two numbers) must be positive")
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x0 >= x1 or y0 >= y1:
        raise InputError(
            f"box {x},{y},{w},{h} lies outside the {width}x{height} (WxH) frame; give x,y,w,h inside the frame"
        )
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True  # a box reaching past the border is clipped to the frame
    return mask


def read_annotation(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Mask image (white = object; gray, RGB or alpha) -> bool `[H, W]` resized (nearest) to `size`; InputError if unreadable or empty."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"annotation mask {file} does not exist; pass --mask-image with an existing image file")
    img = read_image(file, cv2.IMREAD_UNCHANGED)  # InputError with the file name when unreadable
    mask = binarize(img).astype(np.uint8)
    height, width = (int(v) for v in size)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    if not mask.any():
        raise InputError(f"annotation mask {file} is empty (no pixel above 127); paint the object white on black")
    return mask.astype(bool)


def is_box(mask: np.ndarray) -> bool:
    """True when a mask is exactly one filled axis-aligned rectangle (a box annotation, larger than its object)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return False
    return ys.size == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box `(x, y, w, h)` of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
