"""Frechet distance between Gaussian fits of feature sets (VFID when the features are I3D's).

VFID protocol (E2FGVI / ProPainter `calculate_vfid`): one I3D feature vector per video, for the
ground-truth set and for the output set; fit mean and covariance (`np.cov(rowvar=False)`) to
each set, then the Frechet distance below.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from fffvdi.errors import InputError


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and sample covariance `[D, D]` of `feats [N, D]` (N >= 2)."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"features must be [N, D], got shape {x.shape}")
    if x.shape[0] < 2:
        raise InputError(f"need at least 2 feature vectors (videos) to fit a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """Matrix square root; singular inputs give inf/nan or complex output, handled by the caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular matrices; we check finiteness ourselves
        return linalg.sqrtm(a)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """`||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))`, stabilised as in the standard FID code.

    If `sqrt(S1 S2)` is not finite, `eps * I` is added to both covariances; a tiny imaginary part
    from numerical error is dropped (a large one raises, as in the reference implementation).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise InputError(f"incompatible Gaussian stats: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: sqrtm has a large imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def vfid(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """Frechet distance between ground-truth video features `[N, D]` and output video features `[M, D]`."""
    mu1, s1 = feature_stats(real_feats)
    mu2, s2 = feature_stats(fake_feats)
    return frechet_distance(mu1, s1, mu2, s2)
