"""Non-learnable bidirectional propagation: masked positions take flow-warped values from neighbours.

ProPainter-style "hard fill": a backward pass (last frame -> frame 0) brings each frame t+1's
current values into frame t along `flows_fw[:, t]`, then a forward pass (frame 0 -> last)
brings frame t-1 into frame t along `flows_bw[:, t-1]`. A masked position takes the warped
value, and leaves the mask, only where (1) the source position is itself unmasked after its
own filling, (2) the flow passes the forward-backward consistency check, (3) the target lies
in the image. Flows should already be completed inside the masks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from fffvdi.errors import InputError
from fffvdi.flow.warp import fb_consistency, flow_warp

# With bilinear sampling a source counts as a hole if any hole pixel has a weight above this.
_LEAK_TOL = 1e-3


def _check(x: torch.Tensor, masks: torch.Tensor, flows_fw: torch.Tensor, flows_bw: torch.Tensor) -> None:
    """Raise InputError on inconsistent shapes."""
    b, f, _, h, w = x.shape
    ok = masks.shape == (b, f, 1, h, w) and flows_fw.shape == (b, f - 1, 2, h, w) == flows_bw.shape
    if not ok:
        raise InputError(
            f"hard_fill needs x [B, F, C, h, w], masks [B, F, 1, h, w], flows [B, F-1, 2, h, w]; got "
            f"{tuple(x.shape)}, {tuple(masks.shape)}, {tuple(flows_fw.shape)}, {tuple(flows_bw.shape)}"
        )


def _validity(flow_ab: torch.Tensor, flow_ba: torch.Tensor) -> torch.Tensor:
    """Forward-backward validity `[B, F-1, 1, h, w]` of every flow in a clip, computed in one batch."""
    b = flow_ab.shape[0]
    ok = fb_consistency(rearrange(flow_ab, "b t c h w -> (b t) c h w"), rearrange(flow_ba, "b t c h w -> (b t) c h w"))
    return rearrange(ok, "(b t) c h w -> b t c h w", b=b)


def _round_flow(flow: torch.Tensor) -> torch.Tensor:
    """Flow to the nearest pixel, rounding halves up (grid_sample rounds them to even, which
    maps two neighbours of a half-pixel shift onto one source and leaves gaps)."""
    _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype), torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    grid = torch.stack([xs, ys])  # [2, h, w]
    return torch.floor(grid + flow + 0.5) - grid


def _step(
    cur: list[torch.Tensor],
    rem: list[torch.Tensor],
    dst: int,
    src: int,
    flow: torch.Tensor,
    valid: torch.Tensor,
    mode: str,
) -> None:
    """Fill frame `dst` from frame `src` in place (lists of `[B, C, h, w]` values / `[B, 1, h, w]` bool holes)."""
    if not bool(rem[dst].any()):
        return
    if mode == "nearest":
        flow = _round_flow(flow)
    warped = flow_warp(cur[src], flow, mode=mode)
    src_hole = flow_warp(rem[src].to(cur[src].dtype), flow, mode=mode)  # [B, 1, h, w]
    clean = src_hole <= (_LEAK_TOL if mode == "bilinear" else 0.5)
    take = rem[dst] & clean & valid
    cur[dst] = torch.where(take, warped, cur[dst])
    rem[dst] = rem[dst] & ~take


def hard_fill(
    x: torch.Tensor,
    masks: torch.Tensor,
    flows_fw: torch.Tensor,
    flows_bw: torch.Tensor,
    mode: str = "bilinear",
    passes: str = "both",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Propagate `x [B, F, C, h, w]` into `masks` (1 = hole) -> `(filled, remaining_mask [B, F, 1, h, w])`.

    `mode` is the sampling of values ('bilinear' for images, 'nearest' for noise); `passes` is
    'both', 'backward' (only future -> past, enough for frame 0) or 'forward'.
    """
    _check(x, masks, flows_fw, flows_bw)
    if passes not in ("both", "backward", "forward"):
        raise InputError(f"hard_fill passes={passes!r} is unknown; use 'both', 'backward' or 'forward'")
    n_frames = x.shape[1]
    cur = list(x.unbind(1))  # F x [B, C, h, w]
    rem = [m > 0.5 for m in masks.unbind(1)]  # F x [B, 1, h, w] bool
    flows_fw = flows_fw.to(x.dtype)
    flows_bw = flows_bw.to(x.dtype)
    if passes in ("both", "backward"):
        valid_fw = _validity(flows_fw, flows_bw)
        for t in range(n_frames - 2, -1, -1):
            _step(cur, rem, t, t + 1, flows_fw[:, t], valid_fw[:, t], mode)
    if passes in ("both", "forward"):
        valid_bw = _validity(flows_bw, flows_fw)
        for t in range(1, n_frames):
            _step(cur, rem, t, t - 1, flows_bw[:, t - 1], valid_bw[:, t - 1], mode)
    return torch.stack(cur, 1), torch.stack(rem, 1).to(masks.dtype)


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
