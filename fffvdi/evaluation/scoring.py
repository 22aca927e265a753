"""Per-video scores (PSNR, SSIM, masked PSNR, E_warp, optional LPIPS and I3D features) and their aggregation.

Conventions (STTN / E2FGVI / ProPainter): PSNR and SSIM are averaged over all frames pooled
across videos; we also report the mean of per-video means. A frame identical to its ground truth
has PSNR `inf`; averages cap each frame at `PSNR_CAP_DB` (100 dB). E_warp of a video is the
mean over its consecutive output pairs (flow and occlusion from the ground truth, as Lai et al.
compute them on the unprocessed video); the table value is the mean over videos, printed x1e-3
(ProPainter's unit). VFID is the Frechet distance between the I3D features of all ground-truth
videos and all output videos.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from fffvdi.metrics import frame_metrics, i3d_features, lpips_distances, mean_psnr, vfid, warping_error
from fffvdi.metrics.psnr_ssim import PSNR_CAP_DB

EWARP_SCALE = 1e3  # printed value = raw * 1e3, i.e. the unit is x1e-3
EWARP_CHUNK = 32  # frames the flow estimator sees at once (bounds memory on long videos)


class _MemoFlow:
    """Flow function that remembers results by input content, so the output's and the ground truth's
    E_warp (both with the ground truth's flow) share one estimate."""

    def __init__(self, fn, name: str):
        self.fn, self.name, self._cache = fn, name, {}

    def reset(self) -> None:
        self._cache.clear()

    def __call__(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = hashlib.sha1(clip.detach().cpu().numpy().tobytes()).hexdigest() + str(tuple(clip.shape))
        if key not in self._cache:
            self._cache[key] = self.fn(clip)
        return self._cache[key]


@dataclass
class Scorer:
    """The models a video is scored with; `lpips`/`i3d` are None when skipped."""

    flow_fn: Any
    flow_name: str
    ewarp_flow_source: str = "gt"  # gt (Lai et al.: flow of the unprocessed video) | output
    lpips: Optional[torch.nn.Module] = None
    i3d: Optional[torch.nn.Module] = None

    def __post_init__(self) -> None:
        if not isinstance(self.flow_fn, _MemoFlow):
            self.flow_fn = _MemoFlow(self.flow_fn, self.flow_name)


def score_video(scorer: Scorer, gt: np.ndarray, comp: np.ndarray, masks: np.ndarray) -> dict[str, Any]:
    """Scores of one composited video `comp [F, H, W, 3]` against `gt`, holes `masks [F, H, W]`.

    Returns a JSON-able record: per-frame lists, E_warp (raw) of the output and of the ground
    truth, and I3D features (lists) when an I3D model is set.
    """
    rows = frame_metrics(gt, comp, masks)
    rec: dict[str, Any] = {
        "frames": len(gt),
        "per_frame": {
            "psnr": [r["psnr"] for r in rows],
            "ssim": [r["ssim"] for r in rows],
            "masked_psnr": [r["masked_psnr"] for r in rows],
            "mask_ratio": [float(m.mean()) for m in (masks > 0)],
        },
        "flow_model": scorer.flow_name,
        "ewarp": float("nan"),
        "ewarp_gt": float("nan"),
    }
    if len(gt) >= 2:
        scorer.flow_fn.reset()
        ref = gt if scorer.ewarp_flow_source == "gt" else None
        rec["ewarp"] = warping_error(comp, scorer.flow_fn, reference=ref, chunk_frames=EWARP_CHUNK).value
        rec["ewarp_gt"] = warping_error(gt, scorer.flow_fn, reference=gt, chunk_frames=EWARP_CHUNK).value
        scorer.flow_fn.reset()
    if scorer.lpips is not None:
        rec["per_frame"]["lpips"] = lpips_distances(scorer.lpips, gt, comp)
    if scorer.i3d is not None:
        rec["i3d_real"] = i3d_features(scorer.i3d, gt).tolist()
        rec["i3d_fake"] = i3d_features(scorer.i3d, comp).tolist()
    return rec


def _nanmean(values) -> float:
    vals = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else float("nan")


def video_summary(rec: dict[str, Any]) -> dict[str, float]:
    """Per-video averages of a record (PSNRs capped at 100 dB per frame)."""
    pf = rec["per_frame"]
    out = {
        "frames": rec["frames"],
        "psnr": mean_psnr(pf["psnr"]),
        "ssim": _nanmean(pf["ssim"]),
        "masked_psnr": mean_psnr(pf["masked_psnr"]),
        "mask_ratio": _nanmean(pf["mask_ratio"]),
        "ewarp_x1e-3": rec["ewarp"] * EWARP_SCALE,
        "ewarp_gt_x1e-3": rec["ewarp_gt"] * EWARP_SCALE,
    }
    if "lpips" in pf:
        out["lpips"] = _nanmean(pf["lpips"])
    if rec.get("sec_per_frame") is not None:
        out["sec_per_frame"] = rec["sec_per_frame"]
    return out


def aggregate(records: list[dict[str, Any]], want_vfid: bool) -> dict[str, Any]:
    """Dataset metrics: frame-pooled and per-video-mean PSNR/SSIM, mean E_warp, LPIPS, VFID."""
    pooled = lambda key: [v for r in records for v in r["per_frame"][key]]  # noqa: E731
    per_video = [video_summary(r) for r in records]
    out: dict[str, Any] = {
        "videos": len(records),
        "frames": sum(r["frames"] for r in records),
        "psnr": mean_psnr(pooled("psnr")),
        "ssim": _nanmean(pooled("ssim")),
        "masked_psnr": mean_psnr(pooled("masked_psnr")),
        "psnr_video_mean": _nanmean(v["psnr"] for v in per_video),
        "ssim_video_mean": _nanmean(v["ssim"] for v in per_video),
        "ewarp_x1e-3": _nanmean(v["ewarp_x1e-3"] for v in per_video),
        "ewarp_gt_x1e-3": _nanmean(v["ewarp_gt_x1e-3"] for v in per_video),
        "psnr_cap_db": PSNR_CAP_DB,
    }
    if records and all("lpips" in r["per_frame"] for r in records):
        out["lpips"] = _nanmean(pooled("lpips"))
    timed = [r for r in records if r.get("sec_per_frame") is not None]
    if timed:
        out["sec_per_frame"] = sum(r["sec_per_frame"] * r["frames"] for r in timed) / sum(r["frames"] for r in timed)
    if want_vfid and records and all("i3d_real" in r for r in records):
        if len(records) < 2:
            warnings.warn("VFID needs at least 2 videos (a covariance of features); skipped", UserWarning, stacklevel=2)
        else:
            real = np.array([r["i3d_real"] for r in records])  # [N, 1024]
            fake = np.array([r["i3d_fake"] for r in records])
            out["vfid"] = vfid(real, fake)
    return out
