"""Per-frame PSNR / SSIM / masked PSNR as computed by the STTN / E2FGVI / ProPainter protocol.

Frames are RGB `[H, W, 3]` with values in [0, 255] (uint8, or float when a method blends
overlapping windows, as E2FGVI/ProPainter do before scoring); everything is computed in float64.

Averaging: the field's scripts average per-frame PSNR over all frames pooled across videos, and a
frame identical to its ground truth gives `inf`, which makes the plain mean `inf`. `psnr` returns
`float('inf')` for such a frame (the honest per-frame value); `mean_psnr` averages with each value
capped at `PSNR_CAP_DB` = 100 dB so one perfect frame cannot swamp the table. Report which you used.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from skimage.metrics import structural_similarity

from fffvdi.errors import InputError

PEAK = 255.0
PSNR_CAP_DB = 100.0
SSIM_WIN_SIZE = 65  # the protocol's window (STTN/E2FGVI/ProPainter: compare_ssim(..., win_size=65))


def _as_rgb_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two `[H, W, 3]` frames of equal shape and return them as float64."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise InputError(f"frame shapes differ: ground truth {gt.shape} vs prediction {pred.shape}; resize one to match")
    if gt.ndim != 3 or gt.shape[-1] != 3:
        raise InputError(f"expected an RGB frame [H, W, 3], got shape {gt.shape}")
    return gt.astype(np.float64), pred.astype(np.float64)


def _psnr_from_mse(mse: float) -> float:
    """PSNR in dB for peak 255; `inf` when the MSE is exactly 0."""
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(PEAK**2 / mse)


def psnr(gt: np.ndarray, pred: np.ndarray) -> float:
    """PSNR (dB, peak 255) over all pixels and channels; `inf` for identical frames."""
    a, b = _as_rgb_pair(gt, pred)
    return _psnr_from_mse(float(np.mean((a - b) ** 2)))


def masked_psnr(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 255) with the MSE taken only over pixels where `mask > 0` (all 3 channels).

    `mask` is `[H, W]` or `[H, W, 1]`; returns `nan` for an empty mask (undefined), `inf` when
    the masked pixels are identical.
    """
    a, b = _as_rgb_pair(gt, pred)
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.shape != a.shape[:2]:
        raise InputError(f"mask shape {np.asarray(mask).shape} does not match frame size {a.shape[:2]}; resize the mask")
    sel = m > 0
    if not sel.any():
        return float("nan")
    return _psnr_from_mse(float(np.mean((a[sel] - b[sel]) ** 2)))  # a[sel]: [N, 3]


def ssim(gt: np.ndarray, pred: np.ndarray) -> float:
    """SSIM over RGB exactly as the protocol: 65x65 uniform window, data_range 255, channels averaged.

    The field calls `skimage.measure.compare_ssim(gt, pred, data_range=255, multichannel=True,
    win_size=65)` on float64 frames, i.e. skimage's defaults otherwise: uniform (not Gaussian)
    window, sample covariance, K1=0.01, K2=0.03. `channel_axis=-1` is today's name for
    `multichannel=True`. Frames must be at least 65x65.
    """
    a, b = _as_rgb_pair(gt, pred)
    if min(a.shape[:2]) < SSIM_WIN_SIZE:
        raise InputError(
            f"SSIM needs frames of at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} (protocol win_size); got {a.shape[0]}x{a.shape[1]}"
        )
    return float(structural_similarity(a, b, data_range=PEAK, win_size=SSIM_WIN_SIZE, channel_axis=-1))


def mean_psnr(values: Sequence[float], cap: float = PSNR_CAP_DB) -> float:
    """Mean of per-frame PSNRs with each value capped at `cap` dB (so `inf` frames count as `cap`)."""
    vals = [min(float(v), cap) for v in values if not math.isnan(float(v))]
    if not vals:
        return float("nan")
    return float(np.mean(vals))


def frame_metrics(
    gt_frames: Sequence[np.ndarray] | np.ndarray,
    pred_frames: Sequence[np.ndarray] | np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Per-frame `{"psnr", "ssim"}` (+ `"masked_psnr"` when masks are given) for a video `[F, H, W, 3]`."""
    if len(gt_frames) != len(pred_frames):
        raise InputError(f"frame count mismatch: {len(gt_frames)} ground-truth vs {len(pred_frames)} predicted frames")
    if masks is not None and len(masks) != len(gt_frames):
        raise InputError(f"mask count mismatch: {len(masks)} masks for {len(gt_frames)} frames")
    rows = []
    for i, (g, p) in enumerate(zip(gt_frames, pred_frames)):
        row = {"psnr": psnr(g, p), "ssim": ssim(g, p)}
        if masks is not None:
            row["masked_psnr"] = masked_psnr(g, p, masks[i])
        rows.append(row)
    return rows
