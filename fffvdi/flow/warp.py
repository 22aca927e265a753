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

from collections import OrderedDict

import torch
import torch.nn.functional as F

_GRIDS: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # (h, w, device, dtype) -> base grid, most recent last
_GRIDS_KEPT = 8  # a run uses one or two latent sizes; a few more cover tests and benchmarks
_GRID_CACHED_PIXELS = 1 << 20  # larger grids (full-resolution frames, read once per pair) are not kept


def _compiling() -> bool:
    """Whether torch.compile is tracing (torch < 2.3 has only the private spelling)."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()


def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel coordinates `[2, H, W]` (x, y), built once per size, device and dtype (read-only: never modify it).

    Rebuilding it costs five kernel launches per warp, which a recurrence over frames pays at every step. Under
    torch.compile it is built in the graph instead (a cached tensor would become a guarded global)."""
    if _compiling() or h * w > _GRID_CACHED_PIXELS:
        return _make_grid(h, w, device, dtype)
    key = (h, w, torch.device(device), dtype)
    grid = _GRIDS.get(key)
    if grid is None:
        with torch.inference_mode(False):  # a grid first made under inference_mode must still serve autograd later
            grid = _GRIDS[key] = _make_grid(h, w, device, dtype)
        while len(_GRIDS) > _GRIDS_KEPT:
            _GRIDS.popitem(last=False)
    else:
        _GRIDS.move_to_end(key)
    return grid


def _make_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A fresh `[2, H, W]` (x, y) pixel grid."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs, ys])


def flow_grid(flow: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """grid_sample's grid `[N, H, W, 2]` (align_corners=True) reading at `p + flow(p)`, `flow [N, 2, H, W]` (pixels),
    cast to `dtype` (default: the flow's). Computed once, it serves every warp along that flow (`warp_by_grid`)."""
    _, _, h, w = flow.shape
    coords = _base_grid(h, w, flow.device, flow.dtype) + flow  # [N, 2, H, W] absolute pixel coords
    # grid_sample wants coordinates normalised to [-1, 1] with align_corners=True.
    gx = 2.0 * coords[:, 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * coords[:, 1] / max(h - 1, 1) - 1.0
    return torch.stack([gx, gy], dim=-1).to(dtype or flow.dtype)  # [N, H, W, 2]


def warp_by_grid(
    x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Sample `x [N, C, H, W]` at a `flow_grid` of x's dtype."""
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def flow_warp(
    x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Sample `x [N, C, H, W]` at `p + flow(p)` with `flow [N, 2, H, W]` (pixels, the same H, W)."""
    return warp_by_grid(x, flow_grid(flow, x.dtype), mode=mode, padding_mode=padding_mode)


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
