"""Scores of the `propagate` method on one real-footage case (fffvdi.bench.footage): against Telea and a ceiling.

Every score is the masked PSNR (peak 255) pooled over the user's mask, before `mask.dilate`, so that each column
is judged on the same pixels:
- `propagate`: the method as `scripts/inference.py` runs it (masks dilated by `mask.dilate`, DIS + smooth);
- `dilate0`: the same with `mask.dilate=0` (how much the dilation ring costs);
- `telea`: per-frame OpenCV Telea on the dilated masks (the spatial baseline);
- `ceiling`: the same tracing driven by flow estimated on the unmasked clip, never completed (flow inside the hole
  is what separates the method from it), the same spatial fill (`propagate.spatial`) for what no frame reveals.
`ewarp_ratio`: E_warp inside the hole (flow of the unmasked clip) of the propagate result over the truth's, for the
fixed box, where most of the hole is never revealed and a fill can flicker; `ewarp_unrevealed`: the same on the
pixels no frame revealed (filled spatially), the fill that issue #23's stability target is about.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional

import numpy as np
import torch

from fffvdi.bench.footage import FootageCase
from fffvdi.config import MaskConfig
from fffvdi.data.motion_scenes import masked_psnr
from fffvdi.flow.estimators import DISFlow
from fffvdi.flow.warp import fb_consistency, flow_warp
from fffvdi.io.masks import dilate_mask
from fffvdi.propagate.clip import propagate_inpaint
from fffvdi.propagate.pixels import propagate_clip
from fffvdi.propagate.telea import fill_unrevealed, telea_inpaint
from fffvdi.propagate.holes import source_hole
from fffvdi.propagate.options import PropagateOptions

DILATE = 4  # configs/inference.yaml's mask.dilate
SOURCE_ERODE = DILATE - MaskConfig().source_margin  # the ring the method reads, as inference sets it (methods.py)


def _clip_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float() / 255.0  # [1, F, 3, H, W]


def true_flows(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DIS flows `[F-1, 2, H, W]` (forward, backward) of the unmasked clip."""
    fw, bw = DISFlow()(_clip_tensor(truth))
    return fw[0].numpy(), bw[0].numpy()


def ceiling(case: FootageCase, masks: np.ndarray, flows: tuple[np.ndarray, np.ndarray], opts: PropagateOptions) -> np.ndarray:
    """Tracing with the unmasked clip's flow (occlusion-checked everywhere), the method's spatial fill for the rest."""
    fw, bw = flows
    sources = np.stack([source_hole(m, opts.source_erode) for m in masks])  # the method's landing rule
    filled, unfilled = propagate_clip(
        case.frames.astype(np.float32), masks, fw, bw, estimated=np.ones_like(masks), radius=opts.radius,
        combine=opts.combine, fb_check=opts.fb_check, sources=sources, agree=opts.agree,
    )
    out = np.clip(np.rint(filled), 0, 255).astype(np.uint8)
    return np.stack([fill_unrevealed(o, f, m, u, s, opts.telea_radius, opts.spatial)
                     for o, f, m, u, s in zip(out, case.frames, masks, unfilled, sources)])


def hole_ewarp(frames: np.ndarray, masks: np.ndarray, flows: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean squared change (RGB in [0, 1]) along the true flow between neighbouring frames, inside the holes."""
    fw, bw = (torch.from_numpy(f) for f in flows)
    video = _clip_tensor(frames)[0]  # [F, 3, H, W]
    warped = flow_warp(video[1:], fw)  # frame t+1 in frame t's geometry
    valid = fb_consistency(fw, bw) & torch.from_numpy(masks[:-1])[:, None]  # [F-1, 1, H, W]
    sq = ((warped - video[:-1]).double().pow(2) * valid).sum()
    return float(sq / (3.0 * valid.double().sum()).clamp(min=1.0))


def score_case(case: FootageCase, opts: Optional[PropagateOptions] = None, columns=("propagate", "dilate0", "telea", "ceiling")) -> dict:
    """Masked PSNR of each column, s/frame of `propagate` and, for a fixed box, its hole E_warp over the truth's."""
    opts = opts or PropagateOptions(source_erode=SOURCE_ERODE)
    dilated = np.stack([dilate_mask(m.astype(np.uint8), DILATE) for m in case.masks]) > 0
    n = len(case.frames)
    row: dict = dict(case=case.name)
    fixed = case.name.split("-")[1] == "fixed"
    flows = true_flows(case.truth) if ("ceiling" in columns or fixed) else None
    for col in columns:
        t0 = time.perf_counter()
        if col == "propagate":
            out, unfilled = propagate_inpaint(case.frames, dilated, options=opts)
            row["s_per_frame"] = round((time.perf_counter() - t0) / n, 3)
            if fixed:
                for key, where in (("ewarp_ratio", case.masks), ("ewarp_unrevealed", case.masks & unfilled)):
                    truth = max(hole_ewarp(case.truth, where, flows), 1e-12)
                    row[key] = round(hole_ewarp(out, where, flows) / truth, 2)
        elif col == "dilate0":
            out, _ = propagate_inpaint(case.frames, case.masks, options=replace(opts, source_erode=0))
        elif col == "telea":
            out = telea_inpaint(case.frames, dilated, opts.telea_radius)
        else:
            out = ceiling(case, dilated, flows, opts)
        row[col] = round(masked_psnr(out, case.truth, case.masks), 2)
    return row
