"""Inpainting methods behind one window-level interface: FFF-VDI diffusion and the weight-free baseline."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from omegaconf import DictConfig

from fffvdi.config import dtype_from_name
from fffvdi.long_video import WindowFn

logger = logging.getLogger(__name__)


def build_fffvdi(cfg: DictConfig) -> WindowFn:
    """Load the SVD components (and a fine-tuned FFF-VDI UNet) and return the window pipeline."""
    from fffvdi.models.loading import load_svd_components, resolve_device, resolve_dtype
    from fffvdi.pipeline import FFFVDIPipeline

    device = resolve_device(cfg.model.device)
    dtype = resolve_dtype(dtype_from_name(cfg.model.dtype), device)
    if cfg.model.checkpoint is None:
        warnings.warn(
            "no --checkpoint given: using the base SVD UNet, which is not fine-tuned for inpainting "
            "(expect poor results); pass the folder saved by scripts/train.py",
            UserWarning,
            stacklevel=2,
        )
    load_device = "cpu" if cfg.memory.offload == "model" else device
    components = load_svd_components(cfg.model.pretrained, cfg.model.checkpoint, dtype, load_device, cfg.model.variant)
    pipe = FFFVDIPipeline(components, cfg, device, dtype)

    def process(frames: np.ndarray, masks: np.ndarray, generator: torch.Generator) -> np.ndarray:
        return pipe(frames, masks, generator, progress=True)

    return process


def build_propagate(cfg: DictConfig) -> WindowFn:
    """Weight-free flow propagation baseline (pixels), the offline default that really inpaints."""
    from fffvdi.baselines import propagate_inpaint

    def process(frames: np.ndarray, masks: np.ndarray, generator: torch.Generator) -> np.ndarray:
        if not masks.any():
            return frames.copy()
        out, _unfilled = propagate_inpaint(frames, masks, flow=cfg.flow.method, completer=cfg.flow.completion)
        return out

    return process


def build_telea(cfg: DictConfig) -> WindowFn:
    """Per-frame spatial baseline (OpenCV Telea): no temporal information at all."""
    from fffvdi.baselines import telea_inpaint

    return lambda frames, masks, generator: telea_inpaint(frames, masks)


METHODS = {"fffvdi": build_fffvdi, "propagate": build_propagate, "telea": build_telea}


def build_method(cfg: DictConfig) -> WindowFn:
    """The window function of `cfg.method`."""
    if cfg.method not in METHODS:
        from fffvdi.errors import ConfigError

        raise ConfigError(f"method={cfg.method!r} is unknown; use one of {', '.join(METHODS)}")
    return METHODS[cfg.method](cfg)
