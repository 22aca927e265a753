"""Flow warping error E_warp (Lai et al. 2018, "Learning Blind Video Temporal Consistency").

For each consecutive pair (t, t+1) of the OUTPUT video V (RGB in [0, 1]):

    E_t = sum_p M_t(p) * ||V_t(p) - warp(V_{t+1}, f_{t->t+1})(p)||^2 / (3 * sum_p M_t(p))

i.e. the mean squared difference over non-occluded pixels and the 3 channels (Lai's
`evaluate_WarpError.py` divides by the mask summed over its 3 channels; an empty mask gives 0);
E_warp of a video is the mean of E_t over its F-1 pairs, and the table value is the mean over
videos. Values are raw: ProPainter prints E_warp x 1e-3 ("0.974" means 0.974e-3), others x 1e-2.

Flow and occlusion: Lai et al. estimate them with FlowNet2 on the unprocessed video, not on the
result being scored; for inpainting that is the ground truth, so pass `reference=gt_frames` to
follow the protocol (without it, flow is estimated on the output itself, which also works for
object removal where no ground truth exists). ProPainter does not release its E_warp script.
The non-occluded mask M_t is `fb_consistency(f_fw, f_bw)` (|f_fw + warp(f_bw)|^2 <
0.01 (|f_fw|^2 + |warp(f_bw)|^2) + 0.5, the same test as Lai's `detect_occlusion`, plus
"target inside the image") minus Lai's motion-boundary test on the forward flow
(|grad f_x|^2 + |grad f_y|^2 > 0.01 |f|^2 + 0.002); `motion_boundaries=False` drops the latter.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
from einops import rearrange

from fffvdi.errors import InputError
from fffvdi.flow.warp import fb_consistency, flow_warp

FlowFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class WarpError(NamedTuple):
    """Raw E_warp of one video (frames in [0, 1]; multiply by 1e3 for ProPainter's table) and the flow model used."""

    value: float
    flow_model: str


def motion_boundary(flow: torch.Tensor) -> torch.Tensor:
    """Boolean `[N, 1, H, W]` motion boundaries of `flow [N, 2, H, W]` (forward differences, Lai et al.)."""
    du = torch.zeros_like(flow)
    dv = torch.zeros_like(flow)
    du[..., :, :-1] = flow[..., :, :-1] - flow[..., :, 1:]  # horizontal difference, 0 on the last column
    dv[..., :-1, :] = flow[..., :-1, :] - flow[..., 1:, :]  # vertical difference, 0 on the last row
    grad_sq = (du.pow(2) + dv.pow(2)).sum(1, keepdim=True)  # |grad f_x|^2 + |grad f_y|^2
    return grad_sq > 0.01 * flow.pow(2).sum(1, keepdim=True) + 0.002


def pair_warping_errors(
    frames: torch.Tensor, flows_fw: torch.Tensor, flows_bw: torch.Tensor, motion_boundaries: bool = True
) -> torch.Tensor:
    """Per-pair errors `[F-1]` (float64) for `frames [F, 3, H, W]` in [0, 1] and flows `[F-1, 2, H, W]`."""
    warped = flow_warp(frames[1:], flows_fw)  # frame t+1 in frame t's geometry, [F-1, 3, H, W]
    valid = fb_consistency(flows_fw, flows_bw)  # [F-1, 1, H, W]
    if motion_boundaries:
        valid = valid & ~motion_boundary(flows_fw)
    sq = (warped - frames[:-1]).double().pow(2) * valid  # [F-1, 3, H, W]
    count = 3.0 * valid.double().sum(dim=(1, 2, 3))  # non-occluded pixels x channels
    return sq.sum(dim=(1, 2, 3)) / count.clamp(min=1.0)  # empty mask: numerator is 0, so E_t = 0 as in Lai


def _to_video_tensor(frames: np.ndarray, name: str) -> torch.Tensor:
    """uint8 `[F, H, W, 3]` -> float32 `[F, 3, H, W]` in [0, 1]."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"{name} must be a video [F, H, W, 3] RGB, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise InputError(f"{name} has {arr.shape[0]} frame(s); E_warp needs at least 2")
    video = torch.from_numpy(np.ascontiguousarray(arr)).float()
    if arr.dtype == np.uint8:
        video = video / 255.0
    return rearrange(video, "f h w c -> f c h w")


def _estimate_flows(flow_fn: FlowFn, video: torch.Tensor, chunk_frames: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `flow_fn` on `[1, F, 3, H, W]` (in overlapping windows if `chunk_frames`) -> two `[F-1, 2, H, W]`."""
    f, _, h, w = video.shape
    step = f if not chunk_frames else max(int(chunk_frames), 2)
    fws, bws = [], []
    for start in range(0, f - 1, step - 1):  # windows share one frame so every pair is covered once
        clip = video[start : start + step]
        fw, bw = flow_fn(clip[None])
        expected = (1, clip.shape[0] - 1, 2, h, w)
        if tuple(fw.shape) != expected or tuple(bw.shape) != expected:
            raise ValueError(f"flow_fn returned {tuple(fw.shape)} / {tuple(bw.shape)}, expected {expected} each")
        fws.append(fw[0].float().cpu())
        bws.append(bw[0].float().cpu())
    return torch.cat(fws), torch.cat(bws)


def _flow_name(flow_fn: FlowFn, flow_model: str | None) -> str:
    """Name to print next to the value: explicit, else the callable's `name` attribute, else its type/name."""
    if flow_model:
        return flow_model
    name = getattr(flow_fn, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(flow_fn, "__name__", type(flow_fn).__name__)


@torch.no_grad()
def warping_error(
    frames: np.ndarray,
    flow_fn: FlowFn,
    reference: np.ndarray | None = None,
    flow_model: str | None = None,
    motion_boundaries: bool = True,
    chunk_frames: int | None = None,
) -> WarpError:
    """E_warp of the video `frames [F, H, W, 3]` (uint8, or float in [0, 1]).

    `flow_fn(video [1, F, 3, H, W] float in [0, 1]) -> (flows_fw, flows_bw)`, each `[1, F-1, 2, H, W]`
    in fffvdi's flow convention (e.g. `build_flow_estimator("dis")`). Flow and occlusion come from
    `reference` (the ground truth, per Lai et al.) when given, else from `frames`. `chunk_frames`
    bounds how many frames the estimator sees at once.
    """
    video = _to_video_tensor(frames, "frames")
    source = video
    if reference is not None:
        source = _to_video_tensor(reference, "reference")
        if source.shape != video.shape:
            raise InputError(f"reference video shape {tuple(source.shape)} differs from output {tuple(video.shape)} ([F, 3, H, W])")
    flows_fw, flows_bw = _estimate_flows(flow_fn, source, chunk_frames)
    errors = pair_warping_errors(video, flows_fw, flows_bw, motion_boundaries)
    return WarpError(float(errors.mean()), _flow_name(flow_fn, flow_model))
