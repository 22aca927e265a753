"""First-frame noise filling (the FFF-VDI idea): frame 0's masked noise comes from future frames' noise.

Each latent cell of frame 0's hole is traced along the composed flows (`trace`, floating-point
positions, no per-step rounding) to the first future frame where it is visible, and that
frame's noise (or inverted latent) is copied from the position rounded once. Values are copied,
never interpolated: a bilinear mix of independent unit-variance samples has variance below one,
which would make the filled region smoother than the rest of the noise. Each source sample is
used at most once in frame 0 (`dedupe`), so converging flows cannot create correlated duplicates.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from einops import rearrange

from fffvdi.errors import InputError
from fffvdi.flow.trace import FrameRecord, records_from_clip, round_half_up, trace


def _first_use(ids: np.ndarray) -> np.ndarray:
    """Bool mask over 1-D `ids`: True at the first occurrence (in order) of each value."""
    _, first = np.unique(ids, return_index=True)
    keep = np.zeros(len(ids), bool)
    keep[first] = True
    return keep


def trace_first_frame(records: dict[int, FrameRecord], size: tuple[int, int], radius: int) -> tuple:
    """Frame 0's hole cells and where each becomes visible in the future: `(ys, xs, landing)`."""
    ys, xs = np.nonzero(records[0].hole)
    return ys, xs, trace(records, size, 0, ys.astype(np.float64), xs.astype(np.float64), +1, radius, fb_check=False)


def fill_first_frame_noise(
    noise: torch.Tensor,
    masks_lat: torch.Tensor,
    flows_fw_lat: torch.Tensor,
    flows_bw_lat: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    source_latents: Optional[torch.Tensor] = None,
    dedupe: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill frame 0 of `noise [B, F, C, h, w]` inside `masks_lat [B, F, 1, h, w]` from future frames.

    Flows are `[B, F-1, 2, h, w]` in latent cells (pixel flow / 8). Returns `(noise_filled,
    unfilled_mask [B, 1, 1, h, w] bool)`; frames 1.. are returned unchanged. `source_latents`
    (default: `noise`) supplies the future frames' values, e.g. from inversion of the visible
    latents. Cells no future frame reveals (and duplicate uses of one source sample) keep
    `noise[:, 0]`, or fresh standard-normal draws from `generator` if given.
    """
    src = noise if source_latents is None else source_latents
    if noise.ndim != 5 or src.shape != noise.shape:
        raise InputError(
            f"fill_first_frame_noise needs noise and source_latents shaped [B, F, C, h, w] alike, "
            f"got {tuple(noise.shape)} and {tuple(src.shape)}"
        )
    b, f, c, h, w = noise.shape
    if masks_lat.shape != (b, f, 1, h, w) or flows_fw_lat.shape != (b, f - 1, 2, h, w) != flows_bw_lat.shape:
        raise InputError(
            f"fill_first_frame_noise needs masks [B, F, 1, h, w] and flows [B, F-1, 2, h, w] for noise "
            f"{tuple(noise.shape)}; got {tuple(masks_lat.shape)}, {tuple(flows_fw_lat.shape)}, {tuple(flows_bw_lat.shape)}"
        )
    hole0 = masks_lat[:, 0] > 0.5  # [B, 1, h, w]
    got = torch.zeros_like(hole0)
    filled0 = torch.zeros(b, c, h, w, dtype=noise.dtype, device=noise.device)
    for i in range(b):
        if f < 2 or not bool(hole0[i].any()):
            continue
        # Each value carries its global sample index so duplicate uses can be found exactly.
        ids = np.arange(f * h * w, dtype=np.float64).reshape(f, h, w, 1)
        values = np.concatenate([rearrange(src[i].float().cpu().numpy(), "f c h w -> f h w c"), ids], -1)
        records = records_from_clip(
            masks_lat[i, :, 0].float().cpu().numpy(), flows_fw_lat[i].float().cpu().numpy(),
            flows_bw_lat[i].float().cpu().numpy(), values,
        )
        ys, xs, landing = trace_first_frame(records, (h, w), radius=f - 1)
        take = np.flatnonzero(landing.found)
        k = landing.frame[take]
        # The one rounding; the rounded cell is visible, since that is where tracing stopped.
        sy, sx = round_half_up(landing.y[take]), round_half_up(landing.x[take])
        if dedupe:
            keep = _first_use(values[k, sy, sx, c])
            take, k, sy, sx = take[keep], k[keep], sy[keep], sx[keep]
        vals = torch.from_numpy(values[k, sy, sx, :c]).to(noise.device, noise.dtype)  # [n, C]
        ty, tx = torch.from_numpy(ys[take]), torch.from_numpy(xs[take])
        filled0[i, :, ty, tx] = vals.T
        got[i, 0, ty, tx] = True
    frame0 = noise[:, 0]
    if generator is not None:
        fresh = torch.randn(frame0.shape, generator=generator, device=generator.device, dtype=frame0.dtype)
        frame0 = torch.where(hole0, fresh.to(noise.device), frame0)
    frame0 = torch.where(got, filled0, frame0)
    out = noise.clone()
    out[:, 0] = frame0
    unfilled = (hole0 & ~got)[:, None]  # [B, 1, 1, h, w]
    return out, unfilled

