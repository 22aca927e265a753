"""Backward warping by optical flow and the forward-backward consistency check.

Flow conventions used everywhere in fffvdi:
- a flow is `[..., 2, H, W]` in pixels, channel 0 = x (horizontal), channel 1 = y (vertical);
- for a clip of F frames, `flows_fw[:, t]` maps frame t -> t+1 (pixel p of frame t is at
  p + flows_fw[:, t](p) in frame t+1) and `flows_bw[:, t]` maps frame t+1 -> t;
  both are `[B, F-1, 2, H, W]`;
- `flow_warp(x, flow)(p) = x(p + flow(p))`, so `flow_warp(frame[t+1], flows_fw[:, t])` brings
  frame t+1 into frame t's geometry and `flow_warp(frame[t], flows_bw[:, t])` brings frame t
  into frame t+1's geometry.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel coordinates `[2, H, W]` (x, y)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs, ys])


def flow_warp(x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border") -> torch.Tensor:
    """Sample `x [N, C, H, W]` at `p + flow(p)` with `flow [N, 2, H, W]` (pixels)."""
    n, _, h, w = x.shape
    coords = _base_grid(h, w, flow.device, flow.dtype) + flow  # [N, 2, H, W] absolute pixel coords
    # grid_sample wants coordinates normalised to [-1, 1] with align_corners=True.
    gx = 2.0 * coords[:, 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * coords[:, 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)  # [N, H, W, 2]
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def in_bounds(flow: torch.Tensor) -> torch.Tensor:
    """Boolean `[N, 1, H, W]`: True where `p + flow(p)` lands inside the image."""
    _, _, h, w = flow.shape
    coords = _base_grid(h, w, flow.device, flow.dtype) + flow
    ok = (coords[:, 0] >= 0) & (coords[:, 0] <= w - 1) & (coords[:, 1] >= 0) & (coords[:, 1] <= h - 1)
    return ok[:, None]


def fb_consistency(
    flow_ab: torch.Tensor, flow_ba: torch.Tensor, alpha: float = 0.01, beta: float = 0.5,
    padding_mode: str = "border", require_in_bounds: bool = True,
) -> torch.Tensor:
    """Boolean `[N, 1, H, W]` validity of `flow_ab` (frame a -> b) given `flow_ba` (b -> a).

    Valid where `|f_ab + warp(f_ba)|^2 < alpha (|f_ab|^2 + |warp(f_ba)|^2) + beta` (ProPainter's and
    FFF-VDI's test) and, with `require_in_bounds`, the target lies inside the image. The FFF-VDI release
    samples `f_ba` with zero padding and has no bounds test: `padding_mode="zeros", require_in_bounds=False`.
    """
    back = flow_warp(flow_ba, flow_ab, padding_mode=padding_mode)  # f_ba sampled at the point f_ab leads to
    err = (flow_ab + back).pow(2).sum(1, keepdim=True)
    bound = alpha * (flow_ab.pow(2).sum(1, keepdim=True) + back.pow(2).sum(1, keepdim=True)) + beta
    valid = err < bound
    return valid & in_bounds(flow_ab) if require_in_bounds else valid
