"""Fine-tune FFF-VDI: `accelerate launch scripts/train.py --config configs/train.yaml [key=value ...]`.

Writes into checkpoint.output_dir: config.yaml (resolved), checkpoint-N/ (accelerate state + unet/ + config.yaml),
logs/ (TensorBoard), validation/step-N.mp4 (masked input | result | ground truth) and, at the end, unet/
(EMA weights if enabled), loadable with `scripts/inference.py --checkpoint OUTPUT_DIR/unet`.

Resuming (checkpoint.resume_from_checkpoint=latest|PATH) restores weights, optimizer, LR schedule and EMA, and
skips the batches already seen in the current epoch (accelerator.skip_first_batches; the clip order of an epoch is a
function of (seed, epoch)). All training noise is drawn from a generator seeded by (seed, micro-step, process), so a
resumed run reproduces the uninterrupted one exactly.

With lora.enabled, only peft LoRA adapters (+ the propagation module) train; checkpoints hold those alone
(checkpoint-N/lora/) and the final unet/ has them merged (lora.merge_on_save=false: OUTPUT_DIR/lora/, merged later by
scripts/merge_lora.py). configs/train_24gb.yaml is the one-24-GB-GPU recipe (LoRA, 8-bit AdamW, conditioning cache).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fffvdi.config import load_config
from fffvdi.errors import FFFVDIError
from fffvdi.train_config import TrainConfig

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (defaults: fffvdi/train_config.py)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.max_steps=10")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> TrainResult:
    """Parse the command line and run the whole training."""
    from fffvdi.conditioning import Conditioner
    from fffvdi.edm import EDMDenoiser
    from fffvdi.pipeline import FFFVDIPipeline
    from fffvdi.train_cache import ConditioningCache, cache_settings, offloader
    from fffvdi.train_run import (
        StepLog, micro_step, resume, save_checkpoint, save_final, setup_data, setup_ema, setup_model, setup_optimizer,
        setup_run, start_epoch, validate,
    )
    from fffvdi.train_config import check_train_config
    from fffvdi.training import (
        build_clip_dataset, flat_config, inference_config, register_unet_checkpoint_hooks, step_generator,
        validation_clip,
    )

    args = parse_args(argv)
    # Setup checks: every bad value, path or dataset fails here, before a folder is written or a model loaded.
    cfg = load_config(TrainConfig, args.config, args.overrides, check=check_train_config)
    t = cfg.train
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
    # Conditioning (flows, VAE, CLIP) by the same code inference uses; the pipeline renders validation clips.
    # With train.offload_frozen the VAE/CLIP visit the GPU only to encode; data.cache_dir encodes each clip draw once.
    conditioner = Conditioner(components, cfg.flow, accelerator.device, weight_dtype, t.vae_chunk_size,
                              offloader(accelerator.device) if t.offload_frozen else None)
    cache = ConditioningCache(cfg.data.cache_dir, cache_settings(cfg)) if cfg.data.cache_dir else None
    pipe = FFFVDIPipeline(components, inference_config(cfg), accelerator.device, weight_dtype)
    accelerator.init_trackers("fffvdi", config=flat_config(cfg))

    # Setup resume: state from the checkpoint, data position from its step number.
    first_step = resume(accelerator, resume_dir, cfg)
    global_step, micro = first_step, first_step * t.gradient_accumulation_steps
    epoch, skip = divmod(micro, len(dataloader))
    losses: dict[int, float] = {}
    log, loss_sum = StepLog(accelerator, cfg), 0.0
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
                loss, grad_norm = micro_step(accelerator, conditioner, denoiser, batch, params, optimizer, lr_scheduler,
                                             cfg, generator, cache)
            loss_sum += loss / t.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(params)
            losses[global_step], loss_sum = loss_sum, 0.0
            log(global_step, losses[global_step], lr_scheduler.get_last_lr()[0], grad_norm)
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


if __name__ == "__main__":
    try:
        main()
    except FFFVDIError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except torch.cuda.OutOfMemoryError:
        print("error: out of GPU memory; set train.gradient_checkpointing=true, lower data.size / "
              "train.frames_per_step, or use configs/train_24gb.yaml (LoRA, 8-bit AdamW, cache, offload); resume with "
              "checkpoint.resume_from_checkpoint=latest",
              file=sys.stderr)
        sys.exit(2)
