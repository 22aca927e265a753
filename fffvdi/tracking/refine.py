"""Mask clean-up and re-fit to image evidence (OpenCV GrabCut), and a box turned into its object's mask.

GrabCut is seeded, never trusted alone: the sure foreground is the eroded seed, the probable
foreground the rest of the seed, a band around it probable background, everything further away
sure background. Its answer is kept only when it stays close to the seed in area (a textured
background whose colours match the object's can make GrabCut swallow or drop whole regions).
"""
from __future__ import annotations

import cv2
import numpy as np

GRABCUT_ITERS = 4
MIN_COMPONENT = 0.05  # connected parts below this fraction of the largest one are flow noise
ACCEPT_AREA = (0.75, 1.35)  # a re-fit whose area leaves this range of the seed's is rejected


def disk(radius: int) -> np.ndarray:
    """Elliptic structuring element of the given radius (0: a single pixel)."""
    r = max(int(radius), 0)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """bool mask grown by `radius` pixels (disk)."""
    if radius <= 0:
        return mask.astype(bool)
    return cv2.dilate(mask.astype(np.uint8), disk(radius)).astype(bool)


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """bool mask shrunk by `radius` pixels (disk)."""
    if radius <= 0:
        return mask.astype(bool)
    return cv2.erode(mask.astype(np.uint8), disk(radius)).astype(bool)


def object_radius(mask: np.ndarray) -> float:
    """Radius of the disk with the mask's area: the scale for margins and bands."""
    return float(np.sqrt(mask.sum() / np.pi))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes of a bool mask (a hole inside the object is still object)."""
    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(m)
    cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out.astype(bool) | mask.astype(bool)


def clean(mask: np.ndarray) -> np.ndarray:
    """Morphological clean-up: close small gaps, drop specks far smaller than the main part, fill holes."""
    if not mask.any():
        return mask.astype(bool)
    r = max(1, int(round(object_radius(mask) * 0.08)))
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, disk(r))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= MIN_COMPONENT * areas.max()) + 1
    return fill_holes(np.isin(labels, keep))


def box_slices(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice]:
    """Slices of the mask's bounding box grown by `pad` and clipped to the frame."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return slice(max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)), slice(max(xs.min() - pad, 0), min(xs.max() + pad + 1, w))


def _grabcut(image: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """Run GrabCut on an RGB crop from `labels` (cv2.GC_* uint8); the foreground, or None when it cannot run."""
    if not ((labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)).any() or not (
        (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    ).any():
        return None  # GrabCut needs samples of both models
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    lab = labels.copy()
    cv2.setRNGSeed(0)  # GrabCut's GMM start draws from OpenCV's thread RNG: same input, same mask on every call
    try:
        cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), lab, None, bgd, fgd, GRABCUT_ITERS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour statistics (e.g. a flat crop)
        return None
    return (lab == cv2.GC_FGD) | (lab == cv2.GC_PR_FGD)


def refit(image: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Re-fit a propagated mask `seed` bool [H, W] to the RGB `image` [H, W, 3] with seeded GrabCut; the re-fit mask, or
    `seed` when GrabCut cannot run or strays too far from it in area."""
    if not seed.any():
        return seed.astype(bool)
    r = object_radius(seed)
    inner, band = max(2, int(round(0.25 * r))), max(4, int(round(0.3 * r)))
    sy, sx = box_slices(seed, band + 12)
    s = seed[sy, sx]
    labels = np.full(s.shape, cv2.GC_BGD, np.uint8)
    labels[dilate(s, band)] = cv2.GC_PR_BGD
    labels[s] = cv2.GC_PR_FGD
    labels[erode(s, inner)] = cv2.GC_FGD
    fg = _grabcut(image[sy, sx], labels)
    if fg is None:
        return seed.astype(bool)
    fg = clean(fg)
    ratio = fg.sum() / max(s.sum(), 1)
    if not ACCEPT_AREA[0] <= ratio <= ACCEPT_AREA[1]:
        return seed.astype(bool)
    out = np.zeros_like(seed, dtype=bool)
    out[sy, sx] = fg
    return out


def object_in_box(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The object inside a box annotation (bool [H, W] rectangle) on RGB `image`: GrabCut from the rectangle.

    Outside the box is sure background, inside probable foreground; the result never leaves the box.
    Falls back to the whole box when GrabCut finds nothing plausible (under a quarter of the box).
    """
    pad = max(8, int(round(0.5 * object_radius(box))))
    sy, sx = box_slices(box, pad)
    b = box[sy, sx]
    labels = np.where(b, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    fg = _grabcut(image[sy, sx], labels)
    if fg is None:
        return box.astype(bool)
    fg = clean(fg & b)
    if fg.sum() < 0.25 * b.sum():
        return box.astype(bool)
    out = np.zeros_like(box, dtype=bool)
    out[sy, sx] = fg
    return out
