"""Load SVD components (hub id or local diffusers folder) and the FFF-VDI UNet on top of them."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from fffvdi.errors import ModelLoadError

logger = logging.getLogger(__name__)

SUBFOLDERS = ("unet", "vae", "image_encoder", "feature_extractor", "scheduler")


@dataclass
class SVDComponents:
    """The five parts of an SVD checkpoint, with the UNet already wrapped as an FFF-VDI UNet."""

    unet: Any  # fffvdi.models.unet.FFFVDIUNet
    vae: Any  # diffusers AutoencoderKLTemporalDecoder
    image_encoder: Any  # transformers CLIPVisionModelWithProjection
    feature_extractor: Any  # transformers CLIPImageProcessor
    scheduler: Any  # diffusers EulerDiscreteScheduler (kept for its config; sampling uses fffvdi.sampling)

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


def _is_local(source: str) -> bool:
    """Hub ids look like 'org/name'; anything else (or an existing folder) is a local path."""
    return os.path.isdir(source) or source.startswith(("/", ".", "~")) or source.count("/") != 1


def _check_local_layout(folder: Path) -> None:
    """Fail early, naming the missing part, when a local folder is not in diffusers' SVD layout."""
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}; pass model.pretrained=<hub id or existing folder>")
    missing = [s for s in SUBFOLDERS if not (folder / s).is_dir()]
    if missing:
        raise ModelLoadError(
            f"{folder} is not an SVD folder in diffusers layout (missing {', '.join(missing)}/); "
            "save one with StableVideoDiffusionPipeline.save_pretrained or scripts/make_tiny_model.py"
        )


def _load(cls, source: str, subfolder: str, local: bool, **kwargs):
    """from_pretrained with the hub-offline failure turned into one clear line."""
    try:
        return cls.from_pretrained(source, subfolder=subfolder, local_files_only=local or None, **kwargs)
    except (OSError, ValueError) as err:
        if local:
            raise ModelLoadError(f"could not load {subfolder} from {Path(source) / subfolder}: {str(err).splitlines()[0]}") from err
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = " (HF_HUB_OFFLINE is set)" if offline else ""
        raise ModelLoadError(
            f"could not load '{source}' ({subfolder}) from the Hugging Face hub{hint}: no network and no cached copy; "
            f"download it where there is internet (huggingface-cli download {source} --local-dir DIR) "
            "and pass model.pretrained=DIR"
        ) from err


def load_svd_components(
    pretrained: str,
    checkpoint: Optional[str] = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    variant: Optional[str] = None,
    propagation: Optional[dict] = None,
) -> SVDComponents:
    """Load SVD from a hub id or local folder; the UNet comes from `checkpoint` when given.

    `propagation` (DeformableNoiseAlignment arguments: arch, hidden, identity_init) shapes the module
    created when the UNet folder has none; a saved module is always rebuilt from its own config.
    """
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from fffvdi.models.unet import FFFVDIUNet

    local = _is_local(pretrained)
    if local:
        pretrained = str(Path(pretrained).expanduser())
        _check_local_layout(Path(pretrained))
    device = torch.device(device)
    weights = dict(torch_dtype=dtype, variant=variant)
    vae = _load(AutoencoderKLTemporalDecoder, pretrained, "vae", local, **weights)
    image_encoder = _load(CLIPVisionModelWithProjection, pretrained, "image_encoder", local, **weights)
    feature_extractor = _load(CLIPImageProcessor, pretrained, "feature_extractor", local)
    scheduler = _load(EulerDiscreteScheduler, pretrained, "scheduler", local)
    if checkpoint is not None:
        ckpt = Path(checkpoint).expanduser()
        if not (ckpt / "config.json").is_file():
            raise ModelLoadError(
                f"no FFF-VDI UNet at {ckpt} (config.json missing); pass the folder saved by training, "
                "e.g. OUTPUT_DIR/unet or OUTPUT_DIR/checkpoint-N/unet"
            )
        unet = FFFVDIUNet.from_pretrained(str(ckpt), torch_dtype=dtype, propagation=propagation)
    else:
        try:
            unet = FFFVDIUNet.from_pretrained(pretrained, subfolder="unet", torch_dtype=dtype, variant=variant,
                                              local_files_only=local or None, propagation=propagation)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"could not load the UNet of '{pretrained}': {str(err).splitlines()[0]}") from err
    for module in (unet, vae, image_encoder):
        module.to(device).eval().requires_grad_(False)
    return SVDComponents(unet, vae, image_encoder, feature_extractor, scheduler)
