"""Weight-free video inpainting baselines: per-frame Telea, and flow propagation + Telea for the rest."""
from __future__ import annotations

from typing import Union

import cv2
import numpy as np
import torch
from einops import rearrange

from fffvdi.errors import InputError
from fffvdi.flow.completion import FlowCompleter, build_flow_completer
from fffvdi.flow.estimators import FlowEstimator, build_flow_estimator
from fffvdi.propagation.hard_fill import hard_fill

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_numpy(frames: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Frames -> uint8 `[F, H, W, 3]`, masks -> bool `[F, H, W]`; InputError on mismatch."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    frames, masks = np.asarray(frames), np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if frames.ndim != 4 or frames.shape[-1] != 3 or masks.shape != frames.shape[:3]:
        raise InputError(
            f"baselines need frames [F, H, W, 3] uint8 and masks [F, H, W], got {frames.shape} and {masks.shape}"
        )
    if frames.dtype != np.uint8:
        raise InputError(f"baselines need uint8 frames (0..255), got dtype {frames.dtype}; convert before calling")
    return frames, masks > 0


def telea_inpaint(frames: ArrayLike, masks: ArrayLike, radius: int = 3) -> np.ndarray:
    """Per-frame spatial inpainting (OpenCV Telea): uint8 `[F, H, W, 3]`, unchanged outside the mask."""
    frames, masks = _as_numpy(frames, masks)
    out = frames.copy()
    for t in range(frames.shape[0]):
        if masks[t].any():
            out[t] = cv2.inpaint(np.ascontiguousarray(frames[t]), masks[t].astype(np.uint8), radius, cv2.INPAINT_TELEA)
    out[~masks] = frames[~masks]  # Telea only writes inside the mask; make that a guarantee
    return out


def propagate_inpaint(
    frames: ArrayLike,
    masks: ArrayLike,
    flow: Union[str, FlowEstimator] = "dis",
    completer: Union[str, FlowCompleter] = "smooth",
    radius: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Flow-guided pixel propagation, then Telea for what no frame reveals.

    `frames` uint8 `[F, H, W, 3]`, `masks` `[F, H, W]` (nonzero = hole) -> `(frames_out uint8
    [F, H, W, 3], unfilled bool [F, H, W])`; outside the mask the output equals the input exactly.
    """
    frames, masks = _as_numpy(frames, masks)
    estimator = build_flow_estimator(flow) if isinstance(flow, str) else flow
    comp = build_flow_completer(completer) if isinstance(completer, str) else completer
    m = torch.from_numpy(masks).float()[None, :, None]  # [1, F, 1, H, W]
    to_tensor = lambda a: rearrange(torch.from_numpy(a).float().div(255.0), "f h w c -> 1 f c h w")  # noqa: E731
    x = to_tensor(frames) * (1 - m)  # the hole's content is unknown: never let it reach the values
    if frames.shape[0] > 1:
        # Flow sees spatially pre-filled frames: a flat or black hole is a static feature that drags
        # the estimated flow towards zero around it.
        fw, bw = estimator(to_tensor(telea_inpaint(frames, masks, radius)))
        fw, bw = comp.complete_pair(fw, bw, m)
        filled, rem = hard_fill(x, m, fw, bw, mode="bilinear", passes="both")
    else:
        filled, rem = x, m
    out = rearrange(filled[0], "f c h w -> f h w c").mul(255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    unfilled = rem[0, :, 0].numpy() > 0.5
    out = telea_inpaint(out, unfilled, radius) if unfilled.any() else out
    out[~masks] = frames[~masks]
    return out, unfilled
