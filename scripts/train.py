"""Fine-tune FFF-VDI: `accelerate launch scripts/train.py --config configs/train.yaml [key=value ...]`.

Writes into checkpoint.output_dir: config.yaml (resolved), checkpoint-N/ (accelerate state + unet/ + config.yaml),
logs/ (TensorBoard), validation/step-N.mp4 (masked input | result | ground truth) and, at the end, unet/
(EMA weights if enabled), loadable with `scripts/inference.py --checkpoint OUTPUT_DIR/unet`.

Resuming (checkpoint.resume_from_checkpoint=latest|PATH) restores weights, optimizer, LR schedule and EMA, and
skips the batches already seen in the current epoch (accelerator.skip_first_batches; the clip order of an epoch is a
function of (seed, epoch)). All training noise is drawn from a generator seeded by (seed, micro-step, process), so a
resumed run reproduces the uninterrupted one exactly.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fffvdi.config import load_config, save_config
from fffvdi.errors import FFFVDIError, InputError
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
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler

    from fffvdi.edm import EDMDenoiser
    from fffvdi.io import write_video
    from fffvdi.models.loading import load_svd_components
    from fffvdi.pipeline import FFFVDIPipeline
    from fffvdi.training import (
        FlowClipDataset, batch_flows, build_clip_dataset, build_optimizer, check_ranks_agree, check_train_config,
        checkpoint_step, encode_batch, flat_config, inference_config, prepare_run_dir, prune_checkpoints,
        register_unet_checkpoint_hooks, resolve_resume, resolve_weight_dtype, select_trainable, side_by_side,
        step_generator, validation_clip,
    )

    args = parse_args(argv)
    cfg = load_config(TrainConfig, args.config, args.overrides)
    check_train_config(cfg)
    t, ck = cfg.train, cfg.checkpoint
    out_dir = Path(ck.output_dir)

    # Setup accelerator (DDP / DeepSpeed / single device come from `accelerate launch`), run folder, seeds, logging.
    accelerator = Accelerator(
        # Without a GPU, say so: only then does a multi-process launch form one CPU (gloo) group.
        cpu=cfg.model.device == "cpu" or not torch.cuda.is_available(),
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        mixed_precision=t.mixed_precision,
        log_with=None if cfg.logging.report_to == "none" else cfg.logging.report_to,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=t.seed),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=t.find_unused_parameters)],
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    resume_dir = resolve_resume(out_dir, ck.resume_from_checkpoint)
    prepare_run_dir(out_dir, resuming=ck.resume_from_checkpoint is not None, overwrite=ck.overwrite,
                    main=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_config(cfg, out_dir / "config.yaml")
    set_seed(t.seed)  # same on every process (same initial weights); per-process noise comes from step_generator
    if t.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # Setup model: frozen VAE/CLIP in weight_dtype; the FFF-VDI UNet stays float32 (AMP trains float32 weights).
    weight_dtype = resolve_weight_dtype(t.weight_dtype, t.mixed_precision, accelerator.device)
    components = load_svd_components(cfg.model.pretrained, cfg.model.checkpoint, dtype=torch.float32,
                                     device=accelerator.device, variant=cfg.model.variant,
                                     propagation=dict(cfg.model.propagation))
    components.vae.to(dtype=weight_dtype)
    components.image_encoder.to(dtype=weight_dtype)
    unet = components.unet
    params = select_trainable(unet, cfg.trainable)
    total = sum(p.numel() for p in unet.parameters())
    logger.info("trainable parameters: %d of %d (%.1f %%) in %d tensors matching %s", sum(p.numel() for p in params),
                total, 100.0 * sum(p.numel() for p in params) / total, len(params), list(cfg.trainable))
    if t.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()

    # Setup optimizer and LR schedule (the prepared scheduler steps once per process per optimizer step).
    optimizer = build_optimizer(params, cfg.optim)
    lr_scheduler = get_scheduler(cfg.optim.lr_scheduler, optimizer,
                                 num_warmup_steps=cfg.optim.warmup_steps * accelerator.num_processes,
                                 num_training_steps=t.max_steps * accelerator.num_processes)

    # Setup data: clips (+ DIS flows estimated in the workers), shuffled reproducibly per (seed, epoch).
    clips = build_clip_dataset(cfg, seed=t.seed)
    flows_in_workers = cfg.flow.in_workers and cfg.flow.method == "dis"
    dataset = FlowClipDataset(clips, cfg.flow.method, cfg.flow.cache_dir) if flows_in_workers else clips
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=t.batch_size, shuffle=True, drop_last=True,
                                             num_workers=cfg.data.num_workers,
                                             pin_memory=accelerator.device.type == "cuda")
    if len(dataloader) == 0:
        raise InputError(f"data.root={cfg.data.root} gives {len(dataset)} clips, fewer than train.batch_size="
                          f"{t.batch_size}; add videos or lower the batch size")
    unet, optimizer, dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, dataloader, lr_scheduler)
    raw_unet = accelerator.unwrap_model(unet)
    params = [p for p in raw_unet.parameters() if p.requires_grad]  # DeepSpeed may have re-created them
    ema = None
    if t.ema.enabled:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=t.ema.decay)
        ema.to(device=accelerator.device, dtype=torch.float32)  # float32 shadow even when DeepSpeed trains in fp16
        accelerator.register_for_checkpointing(ema)
    register_unet_checkpoint_hooks(accelerator)
    denoiser = EDMDenoiser(unet, t.p_mean, t.p_std, net_dtype=raw_unet.dtype)
    # The pipeline supplies the VAE/CLIP encoding, flow estimator and completer, and renders validation clips.
    pipe = FFFVDIPipeline(components, inference_config(cfg), accelerator.device, weight_dtype)
    val_clip = validation_clip(cfg) if cfg.validation.every_steps > 0 and accelerator.is_main_process else None
    accelerator.init_trackers("fffvdi", config=flat_config(cfg))

    # Setup resume: weights, optimizer, schedule, EMA from the checkpoint; data position from its step number.
    first_step = 0
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        first_step = checkpoint_step(resume_dir)
        logger.info("resumed from %s at step %d", resume_dir, first_step)
    elif ck.resume_from_checkpoint is not None:
        logger.info("no checkpoint in %s to resume from; starting at step 0", out_dir)
    global_step, micro_step = first_step, first_step * t.gradient_accumulation_steps
    epoch, skip = divmod(micro_step, len(dataloader))

    # Train.
    losses: dict[int, float] = {}
    loss_sum, log_loss, log_start, log_steps = 0.0, torch.zeros((), device=accelerator.device), time.perf_counter(), 0
    grad_norm = None
    logger.info("training steps %d -> %d, %d batches/epoch/process, %d process(es)", first_step, t.max_steps,
                len(dataloader), accelerator.num_processes)
    while global_step < t.max_steps:
        dataloader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        loader.set_epoch(epoch)
        for batch in loader:
            generator = step_generator(t.seed, micro_step, accelerator.process_index, accelerator.device)
            micro_step += 1
            with accelerator.accumulate(unet):
                flows_fw, flows_bw = batch_flows(batch, pipe.flow_fn, cfg.flow.cache_dir)
                z0, cond = encode_batch(pipe, batch["frames"], batch["masks"], flows_fw.to(accelerator.device),
                                        flows_bw.to(accelerator.device), t, generator)
                if raw_unet.dtype != torch.float32:  # DeepSpeed fp16/bf16: no autocast, propagation inputs must match
                    cond = cond.to(dtype=raw_unet.dtype)
                loss, _ = denoiser.loss(z0, cond, generator=generator, mask_weight=t.mask_weight)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else math.inf
                    grad_norm = accelerator.clip_grad_norm_(params, max_norm)  # None under DeepSpeed
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item() / t.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue

            # One optimizer step done: EMA, logs, checkpoint, validation.
            global_step += 1
            if ema is not None:
                ema.step(params)
            losses[global_step], log_loss, loss_sum = loss_sum, log_loss + loss_sum, 0.0
            log_steps += 1
            if global_step % cfg.logging.every_steps == 0 or global_step == t.max_steps:
                mean_loss = accelerator.reduce(log_loss / log_steps, reduction="mean").item()
                logs = {"loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0],
                        "steps_per_s": log_steps / (time.perf_counter() - log_start)}
                if grad_norm is not None:
                    logs["grad_norm"] = float(grad_norm)
                if torch.cuda.is_available():
                    logs["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
                accelerator.log(logs, step=global_step)
                logger.info("step %d: %s", global_step, ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))
                log_loss, log_start, log_steps = torch.zeros_like(log_loss), time.perf_counter(), 0
            if ck.every_steps > 0 and global_step % ck.every_steps == 0:
                ckpt_dir = out_dir / f"checkpoint-{global_step}"
                if accelerator.is_main_process:
                    for old in prune_checkpoints(out_dir, ck.total_limit):
                        logger.info("removed %s (checkpoint.total_limit=%s)", old, ck.total_limit)
                accelerator.wait_for_everyone()
                accelerator.save_state(str(ckpt_dir))  # accelerate state + unet/ via the registered hook
                if accelerator.is_main_process:
                    save_config(cfg, ckpt_dir / "config.yaml")
                    logger.info("saved %s", ckpt_dir)
            if cfg.validation.every_steps > 0 and global_step % cfg.validation.every_steps == 0:
                if accelerator.is_main_process:
                    raw_unet.eval()
                    if ema is not None:  # validate the EMA weights, then put the training weights back
                        ema.store(params)
                        ema.copy_to(params)
                    with accelerator.autocast():
                        result = pipe(*val_clip, generator=torch.Generator().manual_seed(cfg.validation.seed))
                    if ema is not None:
                        ema.restore(params)
                    raw_unet.train()
                    video = side_by_side(val_clip[0], val_clip[1], result)  # [F, H, 3W, 3]
                    path = write_video(out_dir / "validation" / f"step-{global_step}.mp4", video, cfg.validation.fps)
                    if cfg.logging.report_to == "tensorboard":
                        writer = accelerator.get_tracker("tensorboard", unwrap=True)
                        writer.add_image("validation", video[len(video) // 2], global_step, dataformats="HWC")
                    logger.info("validation video %s", path)
                accelerator.wait_for_everyone()
            if global_step >= t.max_steps:
                break
        epoch, skip = epoch + 1, 0

    # Save the final UNet (EMA weights if enabled) + the resolved config, once all ranks are known to agree.
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        check_ranks_agree(accelerator, params)
    if ema is not None:
        ema.copy_to(params)
    if accelerator.is_main_process:
        raw_unet.save_pretrained(out_dir / "unet")
        save_config(cfg, out_dir / "config.yaml")
        logger.info("saved the trained UNet to %s", out_dir / "unet")
    accelerator.end_training()
    return TrainResult(out_dir, first_step, global_step, losses, raw_unet, optimizer)


if __name__ == "__main__":
    try:
        main()
    except FFFVDIError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
