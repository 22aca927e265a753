"""Flows and masks at another resolution (pixel -> latent grid): flows rescaled per axis, masks nearest or max; or
the FFF-VDI release's way (`release_latent_inputs`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from fffvdi.errors import InputError


def resize_flows_and_masks(
    flows: torch.Tensor | None, masks: torch.Tensor | None, size: tuple[int, int], mask_mode: str = "nearest"
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Resize `flows [B, T, 2, H, W]` (bilinear, values rescaled per axis) and `masks [B, F, 1, H, W]` to `size`.

    `mask_mode='nearest'` (the SPEC's choice) samples each cell's centre pixel; 'max' marks a
    cell as hole if any of its pixels is (conservative: no object pixel leaks into a source).
    """
    h, w = int(size[0]), int(size[1])
    out_flows = out_masks = None
    if flows is not None:
        b, _, _, fh, fw = flows.shape
        flat = rearrange(flows, "b t c h w -> (b t) c h w").float()
        down = h < fh or w < fw
        # Antialiased bilinear averages the flow over each cell instead of sampling single pixels.
        flat = F.interpolate(flat, size=(h, w), mode="bilinear", align_corners=False, antialias=down)
        scale = torch.tensor([w / fw, h / fh], dtype=flat.dtype, device=flat.device).view(1, 2, 1, 1)
        out_flows = rearrange(flat * scale, "(b t) c h w -> b t c h w", b=b).to(flows.dtype)
    if masks is not None:
        if mask_mode not in ("nearest", "max"):
            raise InputError(f"mask_mode={mask_mode!r} is unknown; use 'nearest' or 'max'")
        b, _, _, mh, mw = masks.shape
        flat = rearrange(masks, "b f c h w -> (b f) c h w").float()
        if mask_mode == "max" and h <= mh and w <= mw:
            flat = F.adaptive_max_pool2d(flat, (h, w))
        else:
            flat = F.interpolate(flat, size=(h, w), mode="nearest-exact")
        out_masks = rearrange(flat, "(b f) c h w -> b f c h w", b=b).to(masks.dtype)
    return out_flows, out_masks


def release_latent_inputs(
    flows: torch.Tensor | None, masks: torch.Tensor | None, size: tuple[int, int]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`resize_flows_and_masks` as the FFF-VDI release's UNet does it: flows `[B, T, 2, H, W]` plain bilinear
    (align_corners=False, no antialiasing) with their values left in image pixels, masks `[B, F, 1, H, W]` by
    `F.interpolate(mode="nearest")` (each cell takes its top-left pixel)."""
    size = (int(size[0]), int(size[1]))
    out_flows = out_masks = None
    if flows is not None:
        flat = rearrange(flows, "b t c h w -> (b t) c h w").float()
        flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
        out_flows = rearrange(flat, "(b t) c h w -> b t c h w", b=flows.shape[0]).to(flows.dtype)
    if masks is not None:
        flat = F.interpolate(rearrange(masks, "b f c h w -> (b f) c h w").float(), size=size, mode="nearest")
        out_masks = rearrange(flat, "(b f) c h w -> b f c h w", b=masks.shape[0]).to(masks.dtype)
    return out_flows, out_masks
