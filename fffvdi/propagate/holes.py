"""Hole masks of the propagate method: grown where flow is completed, shrunk where other frames may be read."""
from __future__ import annotations

import cv2
import numpy as np

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))  # mask.dilate's structuring element


def grow_hole(hole: np.ndarray, pixels: int) -> np.ndarray:
    """`hole` grown by `pixels` in every direction (square), like the flow completer's hole."""
    if pixels <= 0 or not hole.any():
        return hole.copy()
    return cv2.dilate(hole.astype(np.uint8), np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)) > 0


def source_hole(hole: np.ndarray, erode: int) -> np.ndarray:
    """Where other frames may not be read: `hole` shrunk by `erode` steps of a 3x3 cross (at least the user's mask
    grown by mask.dilate - erode, as erosion undoes a dilation only up to closing small gaps)."""
    if erode <= 0 or not hole.any():
        return hole
    return cv2.erode(hole.astype(np.uint8), _CROSS, iterations=erode, borderValue=1) > 0
