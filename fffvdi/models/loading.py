"""Load SVD components (hub id or local diffusers folder) and the FFF-VDI UNet on top of them."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from huggingface_hub import constants, try_to_load_from_cache

from fffvdi.errors import ModelLoadError
from fffvdi.models.hub import PROBE_TIMEOUT_S, env_offline, hub_reachable, is_local
from fffvdi.models.unet import FFFVDIUNet

logger = logging.getLogger(__name__)

SUBFOLDERS = ("unet", "vae", "image_encoder", "feature_extractor", "scheduler")
# the first file from_pretrained reads in each subfolder: its presence in the cache means a cached copy
_CONFIG_FILES = {"unet": "config.json", "vae": "config.json", "image_encoder": "config.json",
                 "feature_extractor": "preprocessor_config.json", "scheduler": "scheduler_config.json"}


@dataclass
class SVDComponents:
    """The five parts of an SVD checkpoint, with the UNet already wrapped as an FFF-VDI UNet."""

    unet: Any  # fffvdi.models.unet.FFFVDIUNet
    vae: Any  # diffusers AutoencoderKLTemporalDecoder
    image_encoder: Any  # transformers CLIPVisionModelWithProjection
    feature_extractor: Any  # transformers CLIPImageProcessor
    scheduler: Any  # diffusers EulerDiscreteScheduler (kept for its config; sampling uses fffvdi.diffusion.samplers)

    @property
    def vae_scale_factor(self) -> int:
        """Spatial downscale between pixels and latents (8 for SVD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """Half precision is slow or unsupported on CPU: fall back to float32 there."""
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        logger.info("dtype %s requested on CPU; using float32", dtype)
        return torch.float32
    return dtype


def _layout_problem(folder: Path) -> str | None:
    """Why a local `model.pretrained` folder is not in diffusers' SVD layout, naming the missing part; None if it is."""
    if not folder.is_dir():
        return f"model folder not found: {folder}; pass model.pretrained=<hub id or existing folder>"
    missing = [s for s in SUBFOLDERS if not (folder / s).is_dir()]
    if missing:
        return (f"{folder} is not an SVD folder in diffusers layout (missing {', '.join(missing)}/); save one with "
                "StableVideoDiffusionPipeline.save_pretrained or scripts/make_tiny_model.py, and pass it as "
                "model.pretrained")
    return None


def checkpoint_problem(checkpoint: str, name: str = "model.checkpoint") -> str | None:
    """Why `checkpoint` is not a fine-tuned FFF-VDI UNet folder (missing, or no config.json), with the fix; None if it
    is. `name` is how the entry point's user sets it (inference: its --checkpoint flag too)."""
    folder = Path(checkpoint).expanduser()
    if (folder / "config.json").is_file():
        return None
    fix = "pass the unet/ folder scripts/train.py saves (OUTPUT_DIR/unet or OUTPUT_DIR/checkpoint-N/unet)"
    if "CHECKPOINT" in folder.parts:  # README's placeholder, copied as is
        fix = "CHECKPOINT stands for your training run's folder (checkpoint.output_dir); " + fix
    if (folder / "unet" / "config.json").is_file():  # the run folder instead of its unet/
        fix = f"pass {folder / 'unet'}"
    what = "no such folder" if not folder.exists() else "config.json missing"
    return f"no FFF-VDI UNet at {folder} ({name}): {what}; {fix}"


def _hub_error(source: str, subfolder: str, reason: str) -> str:
    """The one-line message for a hub id that can be neither downloaded nor read from the cache."""
    return (
        f"could not load '{source}' (model.pretrained, its {subfolder}/) from the Hugging Face hub: {reason}; "
        "SVD-XT is a gated model: "
        f"accept its licence on https://huggingface.co/{source} and log in (`huggingface-cli login` or HF_TOKEN) "
        f"on a machine with internet, or download it there (hf download {source} --local-dir DIR) and pass "
        "model.pretrained=DIR"
    )


def _hub_cache_only(source: str, subfolders: tuple[str, ...]) -> str:
    """Why a hub id must be read from the local cache only ('' when the hub is reachable); ModelLoadError at once if not cached.

    Without this check, from_pretrained on a machine without network retries every file for ~30 s,
    printing a line per retry, before failing.
    """
    if env_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif hub_reachable():
        return ""
    else:
        reason = f"{constants.ENDPOINT} unreachable within {PROBE_TIMEOUT_S:g} s"
    for sub in subfolders:
        if not isinstance(try_to_load_from_cache(source, f"{sub}/{_CONFIG_FILES[sub]}"), str):
            raise ModelLoadError(_hub_error(source, sub, f"{reason} and it is not in the local cache"))
    logger.info("%s; loading '%s' from the local Hugging Face cache", reason, source)
    return reason


def _sources(pretrained: str, checkpoint: str | None, name: str = "model.checkpoint") -> tuple[list[str], str]:
    """(every problem of the model sources, local paths first; `_hub_cache_only`'s reason), loading nothing.

    A bad local path is named before the hub is asked, so it never hides behind a failed download."""
    problems = [checkpoint_problem(checkpoint, name)] if checkpoint is not None else []
    if is_local(pretrained):
        return [p for p in (*problems, _layout_problem(Path(pretrained).expanduser())) if p], ""
    problems = [p for p in problems if p]
    try:  # a checkpoint replaces the hub's unet/, so only the other parts are needed from there
        return problems, _hub_cache_only(pretrained, tuple(s for s in SUBFOLDERS if s != "unet" or checkpoint is None))
    except ModelLoadError as err:
        return [*problems, str(err)], ""


def model_source_problems(pretrained: str, checkpoint: str | None = None, name: str = "model.checkpoint") -> list[str]:
    """Every reason `load_svd_components(pretrained, checkpoint)` could not start, one line each with its fix (local
    paths first, then the hub; `name`: see `checkpoint_problem`); [] when it can. Loads nothing; asks the hub once."""
    return _sources(pretrained, checkpoint, name)[0]


def _preflight(pretrained: str, checkpoint: Optional[str]) -> str:
    """ModelLoadError listing every problem of the model sources; else `_hub_cache_only`'s reason ('' for local or
    online)."""
    problems, reason = _sources(pretrained, checkpoint)
    if problems:
        raise ModelLoadError("; ".join(problems))
    return reason


def check_model_source(pretrained: str, checkpoint: Optional[str] = None) -> None:
    """ModelLoadError now, in about a second, if `load_svd_components(pretrained, checkpoint)` could not start.

    Checks the checkpoint's config.json, a local folder's layout and that a hub id is reachable or cached;
    for entry points that must reject a bad model before writing anything.
    """
    _preflight(pretrained, checkpoint)


def _load(cls, source: str, subfolder: str, local: bool, reason: str = "", **kwargs):
    """from_pretrained with any failure turned into one clear line; `reason` set = hub id read from the cache only."""
    try:
        return cls.from_pretrained(source, subfolder=subfolder, local_files_only=local or bool(reason) or None, **kwargs)
    except (OSError, ValueError) as err:
        if local:
            raise ModelLoadError(f"could not load {subfolder} from {Path(source) / subfolder}: {str(err).splitlines()[0]}") from err
        # a cached copy missing its weights, or a download that broke off
        cause = f"{reason}, cached copy incomplete ({str(err).splitlines()[0]})" if reason else str(err).splitlines()[0]
        raise ModelLoadError(_hub_error(source, subfolder, cause)) from err


def load_svd_components(
    pretrained: str,
    checkpoint: Optional[str] = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    variant: Optional[str] = None,
    propagation: Optional[dict] = None,
) -> SVDComponents:
    """Load SVD from a hub id or local folder; the UNet comes from `checkpoint` when given.

    `propagation` (`build_propagation` arguments: arch, hidden, identity_init) shapes the module
    created when the UNet folder has none; a saved module is always rebuilt from its own config.
    """
    local = is_local(pretrained)
    if local:
        pretrained = str(Path(pretrained).expanduser())
    reason = _preflight(pretrained, checkpoint)  # before the heavy imports below: bad sources fail in about a second

    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    device = torch.device(device)
    weights = dict(torch_dtype=dtype, variant=variant)
    vae = _load(AutoencoderKLTemporalDecoder, pretrained, "vae", local, reason, **weights)
    image_encoder = _load(CLIPVisionModelWithProjection, pretrained, "image_encoder", local, reason, **weights)
    feature_extractor = _load(CLIPImageProcessor, pretrained, "feature_extractor", local, reason)
    scheduler = _load(EulerDiscreteScheduler, pretrained, "scheduler", local, reason)
    if checkpoint is not None:
        unet = FFFVDIUNet.from_pretrained(str(Path(checkpoint).expanduser()), torch_dtype=dtype, propagation=propagation)
    else:
        try:
            unet = FFFVDIUNet.from_pretrained(pretrained, subfolder="unet", torch_dtype=dtype, variant=variant,
                                              local_files_only=local or bool(reason) or None, propagation=propagation)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"could not load the UNet of '{pretrained}': {str(err).splitlines()[0]}") from err
    for module in (unet, vae, image_encoder):
        module.to(device).eval().requires_grad_(False)
    return SVDComponents(unet, vae, image_encoder, feature_extractor, scheduler)
