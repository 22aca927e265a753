"""Checks of a training config: every value that would fail late (after the model loads) or silently fails here,
in one line naming the key and the fix, before a folder is written or a model is loaded. Closed choices come from
the code that implements them."""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fffvdi.data.youtube_vos import RESIZE_METHODS
from fffvdi.errors import ConfigError
from fffvdi.flow.completion import FLOW_COMPLETERS
from fffvdi.flow.estimators import FLOW_ESTIMATORS
from fffvdi.flow.weights import flow_weight_problems
from fffvdi.inpaint.conditioner import CLIP_SOURCES
from fffvdi.models.loading import check_model_source
from fffvdi.models.propagation import FLOW_UNITS, PROPAGATION_MODULES
from fffvdi.train.logs import REPORT_TO
from fffvdi.train.lora import check_targets_before_loading
from fffvdi.train.setup import LR_SCHEDULERS, MIXED_PRECISIONS, OPTIMIZERS, WEIGHT_DTYPES, optimizer_problem
from fffvdi.train.steps import COND_AUG_SPACES, COND_LATENTS

CHOICES = {  # closed choices of the schema, from their implementations
    "train.mixed_precision": MIXED_PRECISIONS,
    "train.cond_latents": COND_LATENTS,
    "train.weight_dtype": WEIGHT_DTYPES,
    "train.cond_aug_space": COND_AUG_SPACES,
    "optim.name": OPTIMIZERS,
    "logging.report_to": REPORT_TO,
    "model.propagation.arch": PROPAGATION_MODULES,  # registries are read live: a module registered later counts
    "model.propagation.flow_units": (None, *FLOW_UNITS),
    "flow.method": FLOW_ESTIMATORS,
    "flow.completion": FLOW_COMPLETERS,
    "model.device": None,  # checked below: auto | cpu | cuda | cuda:N
    "optim.lr_scheduler": LR_SCHEDULERS,
    "train.clip_source": CLIP_SOURCES,
    "data.resize": RESIZE_METHODS,
}
AT_LEAST = {  # numeric lower bounds
    "train.max_steps": 1, "train.batch_size": 1, "train.gradient_accumulation_steps": 1, "train.vae_chunk_size": 1,
    "data.num_frames": 2, "data.num_workers": 0, "checkpoint.every_steps": 0, "logging.every_steps": 1,
    "validation.every_steps": 0, "validation.num_steps": 1, "optim.warmup_steps": 0, "train.p_std": 0,
    "flow.raft_iters": 1, "validation.fps": 1e-6, "optim.lr": 1e-12, "data.epoch_cycle": 0, "lora.rank": 1,
    "lora.dropout": 0.0,
}


def _fail(key: str, value: Any, fix: str) -> None:
    raise ConfigError(f"{key}={value!r}: {fix}", key=key)


def _check_lean(cfg: Any) -> None:
    """The memory-lean options: optimizer name, LoRA, frame window, conditioning cache."""
    t, d = cfg.train, cfg.data
    problem = optimizer_problem(cfg.optim, "cpu" if cfg.model.device == "cpu" else None)
    if problem is not None:
        raise problem
    for pattern in cfg.lora.target_modules:
        try:
            re.compile(pattern)
        except re.error as err:
            _fail("lora.target_modules", pattern, f"not a regex ({err}); patterns full-match Linear layer names")
    if not 0 <= cfg.lora.dropout < 1:
        _fail("lora.dropout", cfg.lora.dropout, "must lie in [0, 1)")
    if cfg.lora.enabled and importlib.util.find_spec("peft") is None:
        _fail("lora.enabled", True, "needs peft: pip install peft")
    n = t.frames_per_step
    if n is not None and not 2 <= n <= d.num_frames:
        _fail("train.frames_per_step", n, f"must lie in [2, data.num_frames={d.num_frames}], or null for all frames")
    if d.cache_dir is not None:
        if d.epoch_cycle < 1:
            _fail("data.epoch_cycle", d.epoch_cycle, "must be >= 1 with data.cache_dir (0 draws new clips every "
                  "epoch, so the cache would never be read); e.g. data.epoch_cycle=4")
        if t.cond_aug_space != "latent":
            _fail("train.cond_aug_space", t.cond_aug_space, "must be latent with data.cache_dir (the cache holds "
                  "noise-free latents; pixel noise would need the VAE every step)")
        if t.clip_source == "filled" and n is not None and n < d.num_frames:
            _fail("train.clip_source", t.clip_source, "filled cannot be cached per window start; use masked, or "
                  "train.frames_per_step=null")


def check_train_config(cfg: Any) -> None:
    """Reject every value that would otherwise fail late (after the model loads) or silently; one line each."""
    get = lambda key: OmegaConf.select(cfg, key)  # noqa: E731
    for key, allowed in CHOICES.items():
        value = get(key)
        if allowed is None:
            if not (value in ("auto", "cpu", "cuda") or str(value).startswith("cuda:")):
                _fail(key, value, "use auto, cpu, cuda or cuda:N")
        elif value not in allowed:
            _fail(key, value, f"use one of {', '.join(allowed)}")
    for key, low in AT_LEAST.items():
        if get(key) < low:
            _fail(key, get(key), f"must be >= {low:g}")
    t = cfg.train
    drops = (t.drop_image_embeds, t.drop_cond_latents, t.drop_both)
    if min(drops) < 0 or sum(drops) > 1:
        _fail("train.drop_both", t.drop_both, f"drop_image_embeds + drop_cond_latents + drop_both = {sum(drops):g} "
              "must lie in [0, 1] with each >= 0 (they are exclusive events of one draw)")
    if cfg.checkpoint.total_limit is not None and cfg.checkpoint.total_limit < 1:
        _fail("checkpoint.total_limit", cfg.checkpoint.total_limit, "must be >= 1, or null to keep every checkpoint")
    _check_lean(cfg)
    if not 0 < t.ema.decay < 1:
        _fail("train.ema.decay", t.ema.decay, "must lie in (0, 1)")
    h, w = cfg.data.size
    if h % 64 or w % 64 or h <= 0 or w <= 0:
        _fail("data.size", list(cfg.data.size), "must be positive multiples of 64 (H, W), e.g. [256, 512]")
    if (cfg.validation.video is None) != (cfg.validation.mask is None):
        _fail("validation.mask", cfg.validation.mask, "validation.video and validation.mask go together: set both")
    paths = {"data.root": (cfg.data.root, "the dataset root holding JPEGImages/"),
             "data.video_list": (cfg.data.video_list, "a text file of video ids"),
             "validation.video": (cfg.validation.video, "a frames folder or video file"),
             "validation.mask": (cfg.validation.mask, "masks for validation.video"),
             "model.checkpoint": (cfg.model.checkpoint, "a saved FFF-VDI UNet folder (OUTPUT_DIR/unet)")}
    for key, (value, what) in paths.items():
        if value is not None and not Path(value).expanduser().exists():
            _fail(key, value, f"not found; pass {what}")
    missing = flow_weight_problems(cfg.flow)
    if missing:
        raise ConfigError("; ".join(missing.values()), key=next(iter(missing)))
    if not (Path(cfg.data.root) / "JPEGImages").is_dir():
        _fail("data.root", cfg.data.root, "has no JPEGImages/ folder; see datasets/README.md for the layout")
    out = Path(cfg.checkpoint.output_dir)
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        _fail("checkpoint.output_dir", str(out), f"{parent} is not a writable folder; choose another output_dir")
    check_model_source(cfg.model.pretrained, cfg.model.checkpoint)  # layout, hub reachable or cached: ~1 s at most
    if cfg.lora.enabled:
        check_targets_before_loading(cfg)
