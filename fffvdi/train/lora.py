"""LoRA fine-tuning of the FFF-VDI UNet through `peft`: add adapters, save/load them, merge them away.

Adapters go into the wrapped diffusers UNet (`FFFVDIUNet.unet`) with `peft.inject_adapter_in_model`, so the
wrapper and its conv_in hook stay as they are; the propagation module is not adapted but trained in full.
An adapter folder (a checkpoint's `lora/`, or OUTPUT_DIR/lora with `lora.merge_on_save=false`) holds
`adapter_model.safetensors` + `adapter_config.json` (peft's names), the propagation module as
`FFFVDIUNet.save_pretrained` writes it, and `base.json` naming the UNet the adapters were trained on.
Merging folds every adapter into its base weight and removes the peft layers: the result is a plain
FFF-VDI UNet folder that loads without peft.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from fffvdi.errors import ConfigError, InputError
from fffvdi.models.propagation import build_propagation
from fffvdi.models.unet import PROPAGATION_CONFIG, PROPAGATION_WEIGHTS, FFFVDIUNet
from fffvdi.train.config import DEFAULT_TRAINABLE, LoraConfig as LoraSection
from fffvdi.train.trainable import select_trainable

ADAPTER_WEIGHTS, ADAPTER_CONFIG, BASE_FILE = "adapter_model.safetensors", "adapter_config.json", "base.json"


def _target_regex(patterns: Sequence[str]) -> str:
    """One regex peft full-matches against module names of the diffusers UNet."""
    return "|".join(f"(?:{p})" for p in patterns)


def check_targets(unet: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    """Names of the Linear layers of the diffusers UNet `unet` that `patterns` select; ConfigError if one matches none."""
    if not patterns:
        raise ConfigError("lora.target_modules is empty; list regexes of Linear layer names, e.g. "
                          r"'.*temporal_transformer_blocks\.\d+\.attn1\.to_q'", key="lora.target_modules")
    linear = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)]
    for p in patterns:
        try:
            rx = re.compile(p)
        except re.error as err:
            raise ConfigError(f"lora.target_modules pattern {p!r} is not a regex ({err})", key="lora.target_modules")
        if not any(rx.fullmatch(n) for n in linear):
            raise ConfigError(f"lora.target_modules pattern {p!r} matches no Linear layer of the SVD UNet; patterns "
                              "match whole names like 'down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1"
                              ".to_q'", key="lora.target_modules")
    rx = re.compile(_target_regex(patterns))
    return [n for n in linear if rx.fullmatch(n)]


def check_targets_before_loading(cfg: Any) -> None:
    """Run `check_targets` on the run's UNet built on the meta device from its local config.json (no weights), so a
    pattern that matches nothing fails before anything is written; a hub model is checked when it loads."""
    from diffusers import UNetSpatioTemporalConditionModel

    folders = [Path(cfg.model.checkpoint).expanduser()] if cfg.model.checkpoint else []
    folders.append(Path(cfg.model.pretrained).expanduser() / "unet")
    found = next((f / "config.json" for f in folders if (f / "config.json").is_file()), None)
    if found is None:
        return
    config = {k: v for k, v in json.loads(found.read_text()).items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(config)
    check_targets(unet, list(cfg.lora.target_modules))


def _lora_config(cfg_lora: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=int(cfg_lora.rank), lora_alpha=float(cfg_lora.alpha), lora_dropout=float(cfg_lora.dropout),
                      target_modules=_target_regex(list(cfg_lora.target_modules)), bias="none")


def apply_lora(unet: torch.nn.Module, cfg_lora: Any) -> list[torch.nn.Parameter]:
    """Add LoRA adapters (config section `lora`) to an FFFVDIUNet, freeze everything else except the parameters named
    by `lora.full_train` (the propagation module); returns the trainable parameters (adapters + those)."""
    try:
        from peft import inject_adapter_in_model
    except ImportError:
        raise ConfigError("lora.enabled=true needs peft: pip install peft", key="lora.enabled") from None
    check_targets(unet.unet, list(cfg_lora.target_modules))
    inject_adapter_in_model(_lora_config(cfg_lora), unet.unet)  # A/B layers in the base dtype (float32 here)
    # "lora_" names every adapter weight (peft's lora_A/lora_B); the freeze of everything else happens there too.
    return select_trainable(unet, ["lora_", *cfg_lora.full_train], key="lora.full_train")


def has_lora(unet: torch.nn.Module) -> bool:
    """True when `unet` (an FFFVDIUNet) carries peft adapters."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in unet.modules())


def lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of an FFFVDIUNet's diffusers UNet (peft's key names, CPU copies)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(unet.unet).items()}


def save_lora(unet: torch.nn.Module, folder: str | Path, cfg_lora: Any, base: Optional[dict] = None) -> Path:
    """Write the adapters, their config, the propagation module and `base.json` into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(lora_state_dict(unet), str(folder / ADAPTER_WEIGHTS))
    _lora_config(cfg_lora).save_pretrained(str(folder))  # adapter_config.json
    prop = {k: v.detach().contiguous().cpu() for k, v in unet.propagation.state_dict().items()}
    save_file(prop, str(folder / PROPAGATION_WEIGHTS))
    (folder / PROPAGATION_CONFIG).write_text(json.dumps(unet.propagation.config, indent=2) + "\n")
    (folder / BASE_FILE).write_text(json.dumps(base or {}, indent=2) + "\n")
    return folder


def load_lora(unet: torch.nn.Module, folder: str | Path) -> None:
    """Load adapters + propagation module saved by `save_lora` into an FFFVDIUNet that already has the same adapters."""
    from peft import set_peft_model_state_dict
    folder = Path(folder)
    try:
        adapters = load_file(str(folder / ADAPTER_WEIGHTS))
        prop = load_file(str(folder / PROPAGATION_WEIGHTS))
    except (OSError, ValueError, RuntimeError) as err:
        raise InputError(f"cannot read the LoRA adapters in {folder} ({str(err).splitlines()[0]}); resume from "
                         "another checkpoint") from None
    expected = lora_state_dict(unet)
    if adapters.keys() != expected.keys() or any(adapters[k].shape != expected[k].shape for k in expected):
        raise InputError(f"the LoRA adapters in {folder} do not fit this run's lora section (other rank or targets); "
                         "resume with the lora settings of that run (its config.yaml)")
    result = set_peft_model_state_dict(unet.unet, adapters)
    if getattr(result, "unexpected_keys", None):
        raise InputError(f"LoRA adapters in {folder} have unexpected keys {result.unexpected_keys[:3]}")
    unet.propagation.load_state_dict(prop, strict=True)


def merge_lora(unet: torch.nn.Module) -> torch.nn.Module:
    """Fold every adapter into its base weight and put the plain layer back (in place); returns `unet`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    owners = [(name, m) for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in owners:
        layer.merge(safe_merge=True)  # raises on non-finite merged weights
        parent_name, _, child = name.rpartition(".")
        setattr(unet.get_submodule(parent_name) if parent_name else unet, child, layer.get_base_layer())
    for p in unet.parameters():
        p.requires_grad_(False)
    return unet


def load_lora_folder(folder: str | Path, pretrained: Optional[str] = None, checkpoint: Optional[str] = None,
                     dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """An FFFVDIUNet with the adapters of `folder` applied (not merged), on the base named by its base.json unless
    `pretrained`/`checkpoint` are given."""
    from peft import LoraConfig, inject_adapter_in_model

    folder = Path(folder)
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise InputError(f"{folder} holds no {ADAPTER_WEIGHTS}; pass a LoRA folder (OUTPUT_DIR/lora or "
                         "OUTPUT_DIR/checkpoint-N/lora)")
    base = json.loads((folder / BASE_FILE).read_text()) if (folder / BASE_FILE).is_file() else {}
    pretrained, checkpoint = pretrained or base.get("pretrained"), checkpoint or base.get("checkpoint")
    if checkpoint:
        unet = FFFVDIUNet.from_pretrained(checkpoint, torch_dtype=dtype)
    elif pretrained:
        unet = FFFVDIUNet.from_pretrained(pretrained, subfolder="unet", torch_dtype=dtype)
    else:
        raise InputError(f"{folder}/{BASE_FILE} names no base model; pass --pretrained SVD_FOLDER_OR_ID")
    inject_adapter_in_model(LoraConfig.from_pretrained(str(folder)), unet.unet)
    load_lora(unet, folder)
    return unet


def lora_base(cfg: Any) -> dict[str, Any]:
    """The base UNet LoRA adapters of this run apply to (stored as base.json beside them)."""
    return {"pretrained": cfg.model.pretrained, "checkpoint": cfg.model.checkpoint, "variant": cfg.model.variant}


def count_trainable(mode: str = "full", rank: int = 16, unet_config: Optional[dict] = None,
                    patterns: Optional[Sequence[str]] = None) -> dict[str, int]:
    """Trainable and total parameter counts of an FFF-VDI UNet built on the meta device (no memory): SVD-XT's UNet
    (diffusers defaults) unless `unet_config`; mode full uses the `trainable` patterns, lora the default lora section."""
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device("meta"):
        inner = UNetSpatioTemporalConditionModel(**(unet_config or {}))
        unet = FFFVDIUNet(inner, build_propagation(inner.conv_in.out_channels))
        if mode == "lora":
            params = apply_lora(unet, OmegaConf.merge(OmegaConf.structured(LoraSection), {"rank": rank, "alpha": rank}))
        else:
            params = select_trainable(unet, list(patterns or DEFAULT_TRAINABLE))
    total = sum(p.numel() for p in unet.parameters())
    prop = sum(p.numel() for p in unet.propagation.parameters())
    return {"trainable": sum(p.numel() for p in params), "total": total, "propagation": prop}
