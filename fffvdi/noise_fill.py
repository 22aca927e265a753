"""First-frame noise filling (the FFF-VDI idea): frame 0's masked noise comes from future frames' noise.

Inside the latent mask of frame 0, the initial noise latent is replaced by the noise (or
inverted) latents of future frames, warped to frame 0 along the completed flow chain with the
backward hard-fill pass. Values are copied with nearest sampling, never interpolated: a
bilinear mix of independent unit-variance samples has variance below one, which would make
the filled region smoother than the rest of the noise. Each source sample is used at most
once in frame 0 (`dedupe`), so converging flows cannot create correlated duplicate patches.
"""
from __future__ import annotations

from typing import Optional

import torch

from fffvdi.errors import InputError
from fffvdi.propagation.hard_fill import hard_fill


def _first_use(ids: torch.Tensor) -> torch.Tensor:
    """Bool mask over 1-D `ids`: True at the first occurrence (in order) of each value."""
    order = torch.argsort(ids, stable=True)
    s = ids[order]
    first_sorted = torch.ones_like(s, dtype=torch.bool)
    first_sorted[1:] = s[1:] != s[:-1]
    keep = torch.empty_like(first_sorted)
    keep[order] = first_sorted
    return keep


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

    Returns `(noise_filled, unfilled_mask [B, 1, 1, h, w] bool)`; frames 1.. are returned
    unchanged. `source_latents` (default: `noise`) supplies the future frames' values, e.g. from
    inversion of the visible latents. Positions no future frame reveals (and duplicate uses of
    one source sample) keep `noise[:, 0]`, or fresh standard-normal draws from `generator` if given.
    """
    src = noise if source_latents is None else source_latents
    if noise.ndim != 5 or src.shape != noise.shape:
        raise InputError(
            f"fill_first_frame_noise needs noise and source_latents shaped [B, F, C, h, w] alike, "
            f"got {tuple(noise.shape)} and {tuple(src.shape)}"
        )
    b, f, c, h, w = noise.shape
    if f * h * w >= 2**24:
        raise InputError(f"fill_first_frame_noise: F*h*w={f * h * w} is too large for exact indexing; use windows")
    # Carry each sample's global index through the fill so duplicates can be detected exactly.
    ids = torch.arange(f * h * w, device=noise.device, dtype=torch.float32).view(1, f, 1, h, w)
    ids = ids.expand(b, -1, -1, -1, -1)
    x = torch.cat([src.float(), ids], dim=2)  # [B, F, C+1, h, w]
    filled, remaining = hard_fill(x, masks_lat, flows_fw_lat, flows_bw_lat, mode="nearest", passes="backward")
    hole0 = masks_lat[:, 0] > 0.5  # [B, 1, h, w]
    got = hole0 & ~(remaining[:, 0] > 0.5)
    if dedupe:
        src_ids = filled[:, 0, c].round().long()  # [B, h, w]
        for i in range(b):
            sel = got[i, 0]
            keep = _first_use(src_ids[i][sel])
            sub = sel.clone()
            sub[sel] = keep
            got[i, 0] = sub
    frame0 = noise[:, 0]
    if generator is not None:
        fresh = torch.randn(frame0.shape, generator=generator, device=generator.device, dtype=frame0.dtype)
        frame0 = torch.where(hole0, fresh.to(noise.device), frame0)
    frame0 = torch.where(got, filled[:, 0, :c].to(noise.dtype), frame0)
    out = noise.clone()
    out[:, 0] = frame0
    unfilled = (hole0 & ~got)[:, None]  # [B, 1, 1, h, w]
    return out, unfilled
