"""Fit frames onto the model canvas (resize with aspect kept, then pad) and back; paste results."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Placement:
    """Where an (H, W) frame sits on the canvas after resizing: the content box inside the padding."""

    src_size: tuple[int, int]  # (H, W) of the input frames
    canvas: tuple[int, int]  # (h, w) of the model canvas
    box: tuple[int, int, int, int]  # (top, left, height, width) of the resized content on the canvas


FITS = ("keep", "stretch")  # window.fit: keep the aspect ratio and pad | stretch onto the canvas (the release)


def plan_placement(src_size: tuple[int, int], canvas: tuple[int, int], fit: str = "keep") -> Placement:
    """Largest aspect-preserving size that fits in the canvas, centred, the rest padding (never cropped); with
    `fit="stretch"` the frame fills the whole canvas whatever its aspect ratio (as the FFF-VDI release does)."""
    h, w = src_size
    ch, cw = canvas
    if ch % 8 or cw % 8:
        raise ValueError(f"canvas {ch}x{cw} must be a multiple of 8 (64 recommended)")
    if fit not in FITS:
        raise ValueError(f"window.fit={fit!r} is unknown; use one of {', '.join(FITS)}")
    if fit == "stretch":
        return Placement((h, w), (ch, cw), (0, 0, ch, cw))
    scale = min(ch / h, cw / w)
    rh, rw = min(ch, max(1, round(h * scale))), min(cw, max(1, round(w * scale)))
    top, left = (ch - rh) // 2, (cw - rw) // 2
    return Placement((h, w), (ch, cw), (top, left, rh, rw))


def to_canvas(x: torch.Tensor, place: Placement, nearest: bool = False) -> torch.Tensor:
    """Resize `x [B, F, C, H, W]` into its box and pad (replicate for images, zeros for masks)."""
    b, f = x.shape[:2]
    top, left, rh, rw = place.box
    flat = x.flatten(0, 1).float()  # [(B F), C, H, W]
    if nearest:
        flat = F.interpolate(flat, size=(rh, rw), mode="nearest")
    else:  # antialias avoids aliasing when shrinking large inputs
        flat = F.interpolate(flat, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    ch, cw = place.canvas
    pad = (left, cw - rw - left, top, ch - rh - top)
    # Replicated borders look like plausible content to the model; masks pad with "known" (0).
    flat = F.pad(flat, pad, mode="constant", value=0.0) if nearest else F.pad(flat, pad, mode="replicate")
    return flat.unflatten(0, (b, f))


def from_canvas(x: torch.Tensor, place: Placement) -> torch.Tensor:
    """Crop the content box out of `x [B, F, C, h, w]` and resize it back to the input size."""
    b, f = x.shape[:2]
    top, left, rh, rw = place.box
    crop = x[..., top : top + rh, left : left + rw].flatten(0, 1).float()
    out = F.interpolate(crop, size=place.src_size, mode="bilinear", align_corners=False, antialias=True)
    return out.unflatten(0, (b, f))


def feather_alpha(masks: np.ndarray, feather: int) -> np.ndarray:
    """Blend weight `[F, H, W]` in [0, 1]: 1 deep inside the mask, ramping to 0 at its edge, 0 outside.

    The ramp lies inside the mask only, so pixels outside it stay exactly the input's.
    """
    hole = masks.astype(bool)
    if feather <= 0:
        return hole.astype(np.float32)
    alpha = np.zeros(hole.shape, np.float32)
    for i, m in enumerate(hole):
        if m.any():
            inside = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3)  # distance to the nearest known pixel
            alpha[i] = np.clip(inside / float(feather), 0.0, 1.0)
    return alpha


def composite(original: np.ndarray, generated: np.ndarray, masks: np.ndarray, feather: int = 0) -> np.ndarray:
    """Generated pixels inside the mask, original outside: uint8 `[F, H, W, 3]`."""
    alpha = feather_alpha(masks, feather)[..., None]  # [F, H, W, 1]
    mixed = alpha * generated.astype(np.float32) + (1.0 - alpha) * original.astype(np.float32)
    out = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return np.where(alpha > 0, out, original)  # bit-identical outside the mask
