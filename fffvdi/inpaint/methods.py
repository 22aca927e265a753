"""Inpainting methods behind one video-level interface: FFF-VDI diffusion and the weight-free baselines.

A method is `run(read_frames, read_masks, total, sink, progress=True)`: it reads frames and masks
lazily by range and hands finished frames to `sink(first_index, frames)` in order. Diffusion and
Telea work window by window (`fffvdi.inpaint.windows`) and can resume (`run.resumable`: they also take
`resume=WindowState` and `checkpoint=callback`); `propagate` streams over the whole video so
content revealed anywhere within `propagate.radius` frames is used, and starts over when resumed.
`window.region` (`fffvdi.inpaint.region`): diffusion runs each window on its masks' crop; propagate crops only
when asked (`crop`); Telea, already at native resolution, ignores it.
"""
from __future__ import annotations

import logging
import warnings
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from fffvdi.config import dtype_from_name
from fffvdi.errors import ConfigError
from fffvdi.inpaint.conditioner import build_flow_fn
from fffvdi.inpaint.pipeline import FFFVDIPipeline
from fffvdi.inpaint.region import cropped, cropped_io, video_crop
from fffvdi.inpaint.windows import Checkpoint, Sink, WindowFn, WindowState, run_windows
from fffvdi.models.loading import load_svd_components, resolve_device, resolve_dtype
from fffvdi.models.tiny import is_tiny_model
from fffvdi.propagate.telea import telea_frame, telea_inpaint
from fffvdi.propagate.options import PropagateOptions
from fffvdi.propagate.video import propagate_video

logger = logging.getLogger(__name__)

# run(read_frames(start, stop), read_masks(start, stop), total, sink, progress=True) -> None
VideoMethod = Callable[..., None]


def windowed(cfg: DictConfig, process: WindowFn) -> VideoMethod:
    """A window function run over the video in `cfg.window` windows."""

    def run(
        read_frames, read_masks, total: int, sink: Sink, progress: bool = True,
        resume: Optional[WindowState] = None, checkpoint: Optional[Checkpoint] = None,
    ) -> None:
        run_windows(
            process, read_frames, read_masks, total, sink,
            size=cfg.window.num_frames, overlap=cfg.window.overlap, seed=cfg.sampling.seed, progress=progress,
            resume=resume, checkpoint=checkpoint,
        )

    run.resumable = True
    return run


def build_fffvdi(cfg: DictConfig) -> VideoMethod:
    """Load the SVD components (and a fine-tuned FFF-VDI UNet) and return the windowed pipeline."""
    device = resolve_device(cfg.model.device)
    dtype = resolve_dtype(dtype_from_name(cfg.model.dtype), device)
    if cfg.model.checkpoint is None and is_tiny_model(cfg.model.pretrained):
        # the documented offline demo: say plainly what it is instead of warning about quality
        logger.info("tiny random SVD (%s): a smoke test of the whole pipeline, its output is noise inside the mask",
                    cfg.model.pretrained)
    elif cfg.model.checkpoint is None:
        warnings.warn(
            "no model.checkpoint given (--checkpoint for inference.py): using the base SVD UNet, which is not "
            "fine-tuned for inpainting (expect poor results); pass the folder saved by scripts/train.py",
            UserWarning,
            stacklevel=2,
        )
    load_device = "cpu" if cfg.memory.offload == "model" else device
    components = load_svd_components(cfg.model.pretrained, cfg.model.checkpoint, dtype, load_device, cfg.model.variant,
                                     propagation=dict(cfg.model.propagation))
    pipe = FFFVDIPipeline(components, cfg, device, dtype)

    def process(frames: np.ndarray, masks: np.ndarray, generator: torch.Generator) -> np.ndarray:
        return pipe(frames, masks, generator, progress=True)

    # The pipeline sees each window's crop (window.region), so its flows and noise filling are at the crop's scale.
    canvas = (cfg.window.height, cfg.window.width)  # set by the pipeline (resolve_canvas)
    return windowed(cfg, cropped(process, cfg.window.region, canvas, cfg.window.context))


def propagate_options(cfg: DictConfig) -> PropagateOptions:
    """The `propagate` section, and how much of the mask.dilate ring the method may read (mask.source_margin): the
    runner's masks must be grown by mask.dilate already, as inference's MaskSource grows them."""
    return PropagateOptions(**cfg.propagate, source_erode=max(cfg.mask.dilate - cfg.mask.source_margin, 0))


def build_propagate(cfg: DictConfig) -> VideoMethod:
    """Weight-free flow-traced propagation over the whole video (no window limit), Telea for the rest."""
    estimator, completer = build_flow_fn(cfg.flow, torch.device("cpu"))
    opts = propagate_options(cfg)

    def run(read_frames, read_masks, total: int, sink: Sink, progress: bool = True) -> None:
        # window.region: auto keeps the full frame for propagate (see README, "High-resolution videos"); crop
        # uses one crop for the whole video (the union of all masks plus the context margin, no canvas).
        crop = video_crop(read_masks, total, cfg.window.context) if cfg.window.region == "crop" else None
        if crop is not None:
            logger.debug("propagate region: crop %dx%d at (%d, %d)", crop.width, crop.height, crop.left, crop.top)
            read_frames, read_masks, sink = cropped_io(read_frames, read_masks, sink, crop)
        stats = propagate_video(read_frames, read_masks, total, sink, estimator, completer, opts, progress)
        if stats.hole_pixels:
            logger.info("propagate: %.1f%% of hole pixels filled from other frames, the rest by the %s fill",
                        100.0 * stats.propagated / stats.hole_pixels, opts.spatial)

    run.resumable = False  # one stream over the whole video: nothing to resume from
    return run


def build_telea(cfg: DictConfig) -> VideoMethod:
    """Per-frame spatial baseline (OpenCV Telea): no temporal information at all."""
    def run(read_frames, read_masks, total: int, sink: Sink, **kwargs) -> None:
        lookahead: list = []

        def first_content() -> Optional[np.ndarray]:
            """The first frame with visible pixels, Telea-filled: what all-hole frames opening the video show."""
            if not lookahead:
                i = next((i for i in range(total) if not read_masks(i, i + 1).all()), None)
                lookahead.append(None if i is None else telea_frame(read_frames(i, i + 1)[0], read_masks(i, i + 1)[0] > 0))
            return lookahead[0]

        def process(frames: np.ndarray, masks: np.ndarray, generator: torch.Generator) -> np.ndarray:
            # Only a first window of all-hole frames lacks a frame to borrow from (later ones start from
            # the previous window's output).
            fallback = first_content() if masks.reshape(len(masks), -1).all() else None
            return telea_inpaint(frames, masks, fallback=fallback)

        windowed(cfg, process)(read_frames, read_masks, total, sink, **kwargs)

    run.resumable = True
    return run


METHODS = {"fffvdi": build_fffvdi, "propagate": build_propagate, "telea": build_telea}


def build_method(cfg: DictConfig) -> VideoMethod:
    """The video-level runner of `cfg.method`."""
    if cfg.method not in METHODS:
        raise ConfigError(f"method={cfg.method!r} is unknown; use one of {', '.join(METHODS)}")
    return METHODS[cfg.method](cfg)
