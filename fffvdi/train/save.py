"""What a run saves: `checkpoint-N/` (accelerate state, with the UNet or its LoRA adapters written by the hooks
registered here, + config.yaml), atomically (fffvdi/train/checkpointing.py), and the final `unet/` or `lora/`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fffvdi.config import save_config
from fffvdi.models.unet import FFFVDIUNet
from fffvdi.train.checkpointing import commit_checkpoint, crash_point, prune_checkpoints, staging_dir, write_folder
from fffvdi.train.lora import load_lora, lora_base, merge_lora, save_lora
from fffvdi.train.trainable import check_ranks_agree

logger = logging.getLogger("fffvdi.train")


def register_unet_checkpoint_hooks(accelerator: Any, cfg: DictConfig | None = None) -> None:
    """Make accelerator.save_state/load_state store the UNet as CKPT/unet (FFFVDIUNet.save_pretrained) only once, or
    with LoRA (`cfg.lora.enabled`) only its adapters + propagation module as CKPT/lora (fffvdi/train/lora.py)."""
    lora = cfg is not None and cfg.lora.enabled

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        crash_point("saving", int(Path(output_dir).name.split("-")[-1].split(".")[0]))
        if accelerator.is_main_process:
            for model in models:
                raw = accelerator.unwrap_model(model)
                if lora:
                    save_lora(raw, Path(output_dir) / "lora", cfg.lora, lora_base(cfg))
                else:
                    raw.save_pretrained(Path(output_dir) / "unet")
        while weights:  # empty under DeepSpeed, which saves its own engine state
            weights.pop()

    def load_hook(models: list, input_dir: str) -> None:
        if accelerator.distributed_type.name == "DEEPSPEED":
            return  # DeepSpeed restores its engine (weights + optimizer) itself
        while models:
            model = accelerator.unwrap_model(models.pop())
            if lora:  # resume() checked that the checkpoint holds lora/
                load_lora(model, Path(input_dir) / "lora")
                continue
            loaded = FFFVDIUNet.from_pretrained(Path(input_dir) / "unet")
            model.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(accelerator: Any, cfg: DictConfig, out_dir: Path, step: int) -> None:
    """`checkpoint-N/` (accelerate state + unet/ via the registered hook + config.yaml), written atomically
    (fffvdi/train/checkpointing.py); older ones are pruned only once it is complete."""
    staging = staging_dir(out_dir, step, clear=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))  # every process writes its own RNG state into the same folder
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_config(cfg, staging / "config.yaml")
        final = commit_checkpoint(staging, step)
        prune_checkpoints(out_dir, cfg.checkpoint.total_limit, keep=final)
        logger.info("saved %s", final)
    accelerator.wait_for_everyone()


def save_final(accelerator: Any, cfg: DictConfig, raw_unet: Any, ema: Any, params: list[torch.nn.Parameter],
               out_dir: Path) -> None:
    """`unet/` (EMA weights if enabled; LoRA adapters merged) + config.yaml, once every process is known to hold the
    same weights; with lora.merge_on_save=false `lora/` (adapters + propagation module) instead of unet/."""
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        check_ranks_agree(accelerator, params)
    if ema is not None:
        ema.copy_to(params)
    if accelerator.is_main_process:
        lora, merge = cfg.lora.enabled, cfg.lora.merge_on_save
        name = "lora" if lora and not merge else "unet"
        if name == "lora":
            write_folder(out_dir / name, lambda tmp: save_lora(raw_unet, tmp, cfg.lora, lora_base(cfg)))
        else:
            write_folder(out_dir / name, (merge_lora(raw_unet) if lora else raw_unet).save_pretrained)
        save_config(cfg, out_dir / "config.yaml")
        logger.info("saved the trained UNet%s to %s", " (LoRA merged)" if lora and merge else "", out_dir / name)
