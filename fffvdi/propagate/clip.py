"""The `propagate` method on a whole clip held in memory: arrays in, arrays out (tests, notebooks, oracles)."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from fffvdi.flow.completion import FlowCompleter, build_flow_completer
from fffvdi.flow.estimators import FlowEstimator, build_flow_estimator
from fffvdi.propagate.telea import ArrayLike, as_clip_arrays
from fffvdi.propagate.holes import source_hole
from fffvdi.propagate.options import PropagateOptions
from fffvdi.propagate.video import propagate_video


def propagate_inpaint(
    frames: ArrayLike,
    masks: ArrayLike,
    flow: Union[str, FlowEstimator] = "dis",
    completer: Union[str, FlowCompleter] = "smooth",
    options: Optional[PropagateOptions] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flow-traced pixel propagation over the whole clip, then a spatial fill for what no frame reveals.

    `frames` uint8 `[F, H, W, 3]`, `masks` `[F, H, W]` (nonzero = hole) -> `(frames_out uint8
    [F, H, W, 3], unfilled bool [F, H, W])`; outside the mask the output equals the input exactly. With
    `options.source_erode` the masks are taken as grown by mask.dilate, and their outer ring is shown to the method.
    """
    frames, masks = as_clip_arrays(frames, masks)
    estimator = build_flow_estimator(flow) if isinstance(flow, str) else flow
    comp = build_flow_completer(completer) if isinstance(completer, str) else completer
    opts = options or PropagateOptions()
    hidden = np.stack([source_hole(m, opts.source_erode) for m in masks]) if len(masks) else masks
    visible = np.where(hidden[..., None], 0, frames).astype(np.uint8)  # what no frame may be read at never reaches it
    out = np.empty_like(frames)
    unfilled = np.zeros_like(masks)

    def sink(t: int, result: np.ndarray) -> None:
        out[t : t + len(result)] = result

    def report(t: int, left: np.ndarray) -> None:
        unfilled[t] = left

    propagate_video(
        lambda a, b: visible[a:b], lambda a, b: masks[a:b], len(frames), sink, estimator, comp,
        opts, progress=False, report=report,
    )
    out[~masks] = frames[~masks]
    return out, unfilled
