"""The training loop of FFF-VDI, top to bottom: `train(cfg)` (scripts/train.py is its command line).

Writes into checkpoint.output_dir: config.yaml (resolved), checkpoint-N/ (accelerate state + unet/ or lora/ +
config.yaml), logs/ (TensorBoard, metrics.jsonl), validation/step-N.mp4 and, at the end, unet/ (or lora/ with
lora.merge_on_save=false). Resuming (checkpoint.resume_from_checkpoint=latest|PATH) restores weights, optimizer, LR
schedule and EMA, and skips the batches already seen in the current epoch; every random draw of a step comes from a
generator seeded by (seed, micro-step, process), so a resumed run reproduces the uninterrupted one exactly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from fffvdi.diffusion.edm import EDMDenoiser
from fffvdi.inpaint.conditioner import Conditioner, offloader
from fffvdi.inpaint.pipeline import FFFVDIPipeline
from fffvdi.train.cache import ConditioningCache, cache_settings
from fffvdi.train.data import build_clip_dataset, setup_data, start_epoch
from fffvdi.train.logs import StepLog, flat_config
from fffvdi.train.save import register_unet_checkpoint_hooks, save_checkpoint, save_final
from fffvdi.train.setup import resume, setup_ema, setup_model, setup_optimizer, setup_run
from fffvdi.train.steps import condition_batch, step_generator, train_step
from fffvdi.train.validation import inference_config, validate, validation_clip

logger = logging.getLogger("fffvdi.train")


@dataclass
class TrainResult:
    """What a finished run hands back to in-process callers (tests, notebooks)."""

    output_dir: Path
    first_step: int  # optimizer step the loop started from (0, or the resumed checkpoint's N)
    global_step: int  # optimizer steps done at the end
    losses: dict[int, float] = field(default_factory=dict)  # this process's loss per optimizer step
    unet: torch.nn.Module | None = None  # the unwrapped trained FFFVDIUNet (EMA weights if enabled)
    optimizer: torch.optim.Optimizer | None = None


def train(cfg: DictConfig) -> TrainResult:
    """Fine-tune FFF-VDI as `cfg` (a TrainConfig checked by `fffvdi.train.checks.check_train_config`) says."""
    t = cfg.train
    # Setup data: a bad dataset fails here, before a folder is written or a model loaded.
    dataloader = setup_data(cfg, build_clip_dataset(cfg, seed=t.seed))
    val_clip = validation_clip(cfg) if cfg.validation.every_steps > 0 else None

    # Setup accelerator, run folder, seeds; model (trainable subset), optimizer + schedule.
    accelerator, out_dir, resume_dir = setup_run(cfg)
    components, params, weight_dtype = setup_model(cfg, accelerator)
    optimizer, lr_scheduler = setup_optimizer(cfg, params, accelerator)
    unet, optimizer, dataloader, lr_scheduler = accelerator.prepare(components.unet, optimizer, dataloader, lr_scheduler)
    raw_unet = accelerator.unwrap_model(unet)
    params = [p for p in raw_unet.parameters() if p.requires_grad]  # DeepSpeed may have re-created them
    ema = setup_ema(cfg, params, accelerator)
    register_unet_checkpoint_hooks(accelerator, cfg)
    denoiser = EDMDenoiser(unet, t.p_mean, t.p_std, net_dtype=raw_unet.dtype)

    # Setup conditioning (flows, VAE, CLIP) by the same code inference uses; the pipeline renders validation clips.
    # With train.offload_frozen the VAE/CLIP visit the GPU only to encode; data.cache_dir encodes each clip draw once.
    conditioner = Conditioner(components, cfg.flow, accelerator.device, weight_dtype, t.vae_chunk_size,
                              offloader(accelerator.device) if t.offload_frozen else None)
    cache = ConditioningCache(cfg.data.cache_dir, cache_settings(cfg, conditioner.flow_units)) if cfg.data.cache_dir else None
    pipe = FFFVDIPipeline(components, inference_config(cfg), accelerator.device, weight_dtype)
    accelerator.init_trackers("fffvdi", config=flat_config(cfg))

    # Setup resume: state from the checkpoint, data position from its step number.
    first_step = resume(accelerator, resume_dir, cfg)
    global_step, micro = first_step, first_step * t.gradient_accumulation_steps
    epoch, skip = divmod(micro, len(dataloader))
    losses: dict[int, float] = {}
    log = StepLog(accelerator, cfg)
    logger.info("training steps %d -> %d, %d batches/epoch/process, %d process(es)", first_step, t.max_steps,
                len(dataloader), accelerator.num_processes)

    # Train: one micro-step per batch; after each optimizer step EMA, logs, checkpoint, validation.
    while global_step < t.max_steps:
        start_epoch(dataloader, epoch)  # sampler order and the clip draws of this epoch
        loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        loader.set_epoch(epoch)
        for batch in loader:
            generator = step_generator(t.seed, micro, accelerator.process_index, accelerator.device,
                                       accelerator.num_processes)
            micro += 1
            with accelerator.accumulate(unet):
                z0, cond = condition_batch(conditioner, batch, cfg, generator, cache)
                loss, regions, grad_norm = train_step(accelerator, denoiser, z0, cond, params, optimizer, lr_scheduler,
                                                      cfg, generator)
            log.micro_step(loss, regions)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(params)
            losses[global_step] = log.optimizer_step(global_step, lr_scheduler.get_last_lr()[0], grad_norm)
            if cfg.checkpoint.every_steps > 0 and global_step % cfg.checkpoint.every_steps == 0:
                save_checkpoint(accelerator, cfg, out_dir, global_step)
            if cfg.validation.every_steps > 0 and global_step % cfg.validation.every_steps == 0:
                validate(accelerator, cfg, pipe, raw_unet, ema, params, val_clip, out_dir, global_step)
            if global_step >= t.max_steps:
                break
        epoch, skip = epoch + 1, 0

    # Save the final UNet (EMA weights if enabled) + the resolved config.
    save_final(accelerator, cfg, raw_unet, ema, params, out_dir)
    accelerator.end_training()
    return TrainResult(out_dir, first_step, global_step, losses, raw_unet, optimizer)
