"""The named pieces of scripts/train.py's loop: setup (run folder, model, optimizer, data, EMA, resume) and the
per-step work (one micro-step, logging, checkpoint, validation, final save). Each reads the config it needs."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from fffvdi.config import save_config
from fffvdi.errors import InputError

logger = logging.getLogger("fffvdi.train")


# --- setup ---------------------------------------------------------------------------------------
def setup_run(cfg: DictConfig) -> tuple[Any, Path, Optional[Path]]:
    """Accelerator (DDP / DeepSpeed / one device, from `accelerate launch`), run folder, seeds, logging.

    Returns `(accelerator, output_dir, checkpoint_to_resume_or_None)`.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed

    from fffvdi.checkpointing import resolve_resume
    from fffvdi.training import prepare_run_dir

    t, ck = cfg.train, cfg.checkpoint
    out_dir = Path(ck.output_dir)
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
    return accelerator, out_dir, resume_dir


def setup_model(cfg: DictConfig, accelerator: Any) -> tuple[Any, list[torch.nn.Parameter], torch.dtype]:
    """SVD components with the FFF-VDI UNet in float32 (AMP trains float32 weights), VAE/CLIP frozen in
    `train.weight_dtype` (on the CPU with train.offload_frozen), LoRA adapters with lora.enabled; returns
    `(components, trainable_params, weight_dtype)`."""
    from fffvdi.models.loading import load_svd_components
    from fffvdi.training import resolve_weight_dtype, select_trainable

    t = cfg.train
    weight_dtype = resolve_weight_dtype(t.weight_dtype, t.mixed_precision, accelerator.device)
    components = load_svd_components(cfg.model.pretrained, cfg.model.checkpoint, dtype=torch.float32,
                                     device=accelerator.device, variant=cfg.model.variant,
                                     propagation=dict(cfg.model.propagation))
    for frozen in (components.vae, components.image_encoder):
        frozen.to(device="cpu" if t.offload_frozen else accelerator.device, dtype=weight_dtype)
    unet = components.unet
    if cfg.lora.enabled:
        from fffvdi.lora import apply_lora

        params = apply_lora(unet, cfg.lora)
        what = f"LoRA rank {cfg.lora.rank} adapters + {list(cfg.lora.full_train)}"
    else:
        params, what = select_trainable(unet, cfg.trainable), f"matching {list(cfg.trainable)}"
    total, n = sum(p.numel() for p in unet.parameters()), sum(p.numel() for p in params)
    logger.info("trainable parameters: %d of %d (%.1f %%) in %d tensors: %s", n, total, 100.0 * n / total,
                len(params), what)
    if t.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return components, params, weight_dtype


def setup_optimizer(cfg: DictConfig, params: list[torch.nn.Parameter], accelerator: Any) -> tuple[Any, Any]:
    """AdamW (or 8-bit AdamW) and the LR schedule; the prepared scheduler steps once per process per step."""
    from diffusers.optimization import get_scheduler

    from fffvdi.training import build_optimizer

    optimizer = build_optimizer(params, cfg.optim)
    lr_scheduler = get_scheduler(cfg.optim.lr_scheduler, optimizer,
                                 num_warmup_steps=cfg.optim.warmup_steps * accelerator.num_processes,
                                 num_training_steps=cfg.train.max_steps * accelerator.num_processes)
    return optimizer, lr_scheduler


def setup_data(cfg: DictConfig, clips: torch.utils.data.Dataset) -> torch.utils.data.DataLoader:
    """Batches of `clips` (+ DIS flows estimated in the workers), shuffled reproducibly per (seed, epoch)."""
    from fffvdi.train_cache import EpochCycle
    from fffvdi.train_flows import FlowClipDataset

    t = cfg.train
    if cfg.data.epoch_cycle:
        clips = EpochCycle(clips, cfg.data.epoch_cycle)
    # With the conditioning cache, flows are estimated only for clips it lacks (in the main process).
    flows_in_workers = cfg.flow.in_workers and cfg.flow.method == "dis" and cfg.data.cache_dir is None
    dataset = FlowClipDataset(clips, cfg.flow.method, cfg.flow.cache_dir) if flows_in_workers else clips
    loader = torch.utils.data.DataLoader(dataset, batch_size=t.batch_size, shuffle=True, drop_last=True,
                                         num_workers=cfg.data.num_workers,
                                         pin_memory=torch.cuda.is_available() and cfg.model.device != "cpu")
    if len(loader) == 0:
        raise InputError(f"data.root={cfg.data.root} gives {len(dataset)} clips, fewer than train.batch_size="
                          f"{t.batch_size}; add videos or lower the batch size")
    return loader


def start_epoch(loader: Any, epoch: int) -> None:
    """Set the epoch of the (prepared) loader's sampler AND of its clip dataset: accelerate's set_epoch skips the
    dataset's when the sampler is sharded over processes, so DDP runs would draw the same clips every epoch."""
    loader.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def setup_ema(cfg: DictConfig, params: list[torch.nn.Parameter], accelerator: Any) -> Any:
    """An EMA of the trainable weights, saved with every checkpoint (None when disabled)."""
    if not cfg.train.ema.enabled:
        return None
    from diffusers.training_utils import EMAModel

    ema = EMAModel(params, decay=cfg.train.ema.decay)
    ema.to(device=accelerator.device, dtype=torch.float32)  # float32 shadow even when DeepSpeed trains in fp16
    accelerator.register_for_checkpointing(ema)
    return ema


def resume(accelerator: Any, resume_dir: Optional[Path], cfg: DictConfig) -> int:
    """Restore weights, optimizer, schedule and EMA from `resume_dir`; returns the optimizer step to start from."""
    from fffvdi.checkpointing import checkpoint_step

    if resume_dir is None:
        if cfg.checkpoint.resume_from_checkpoint is not None:
            logger.info("no complete checkpoint in %s to resume from; starting at step 0", cfg.checkpoint.output_dir)
        return 0
    saved_lora = (resume_dir / "lora").is_dir()
    if saved_lora != cfg.lora.enabled and accelerator.distributed_type.name != "DEEPSPEED":
        have, want = ("LoRA adapters", "lora.enabled=true") if saved_lora else ("a full UNet", "lora.enabled=false")
        raise InputError(f"checkpoint {resume_dir} holds {have}; resume it with {want} (see its config.yaml)")
    try:
        accelerator.load_state(str(resume_dir))
    except InputError:  # ours, already one line (e.g. LoRA adapters of another rank)
        raise
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, ImportError) as err:  # torch.load/pickle failures
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot load checkpoint {resume_dir} ({reason}); it is damaged: resume from another "
                         "checkpoint-N or move it away") from None
    step = checkpoint_step(resume_dir)
    logger.info("resumed from %s at step %d", resume_dir, step)
    return step


# --- one step and what follows it -----------------------------------------------------------------
def micro_step(accelerator: Any, conditioner: Any, denoiser: Any, batch: dict, params: list[torch.nn.Parameter],
               optimizer: Any, lr_scheduler: Any, cfg: DictConfig, generator: torch.Generator,
               cache: Any = None) -> tuple[float, Any]:
    """Flows, conditioning, EDM loss, backward, clipping and the (accumulated) optimizer step for one batch.

    Call inside `accelerator.accumulate(unet)`. Returns `(loss, grad_norm or None)`.
    """
    from fffvdi.train_cache import draw_conditioning, encode_batch_latent, window_start
    from fffvdi.train_flows import batch_flows, item_flows
    from fffvdi.training import encode_batch

    t = cfg.train
    clip_len = batch["frames"].shape[1]
    n = min(t.frames_per_step or clip_len, clip_len)
    start = window_start(clip_len, t.frames_per_step, generator)  # this step's frame window [start, start + n)
    if t.cond_aug_space == "latent":  # encode the whole clip (or read it from the cache), then draw the window
        enc = encode_batch_latent(conditioner, batch, cfg, cache,
                                  lambda i: item_flows(batch, i, conditioner.flow_fn, cfg.flow.cache_dir))
        z0, cond = draw_conditioning(enc, t, conditioner.c.vae.config.scaling_factor, start, n, generator)
    else:  # pixel noise before the VAE: encode only the window's frames
        flows_fw, flows_bw = batch_flows(batch, conditioner.flow_fn, cfg.flow.cache_dir)  # whole clip [B, F-1, ...]
        frames, pairs = slice(start, start + n), slice(start, start + n - 1)
        z0, cond = encode_batch(conditioner, batch["frames"][:, frames], batch["masks"][:, frames],
                                flows_fw[:, pairs].to(accelerator.device), flows_bw[:, pairs].to(accelerator.device),
                                t, generator)
    if denoiser.net_dtype not in (None, torch.float32):  # DeepSpeed fp16/bf16: no autocast, propagation inputs must match
        cond = cond.to(dtype=denoiser.net_dtype)
    loss, _ = denoiser.loss(z0, cond, generator=generator, mask_weight=t.mask_weight)
    accelerator.backward(loss)
    grad_norm = None
    if accelerator.sync_gradients:
        max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else math.inf
        grad_norm = accelerator.clip_grad_norm_(params, max_norm)  # None under DeepSpeed
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), grad_norm


class StepLog:
    """Mean loss, learning rate, grad norm, steps/s and GPU memory every `logging.every_steps` optimizer steps, to the
    tracker, the log and OUTPUT_DIR/logs/metrics.jsonl."""

    def __init__(self, accelerator: Any, cfg: DictConfig) -> None:
        self.accelerator, self.cfg = accelerator, cfg
        self.jsonl = Path(cfg.checkpoint.output_dir) / "logs" / "metrics.jsonl"
        self.loss, self.steps, self.start = torch.zeros((), device=accelerator.device), 0, time.perf_counter()

    def __call__(self, step: int, loss: float, lr: float, grad_norm: Any) -> None:
        self.loss, self.steps = self.loss + loss, self.steps + 1
        if step % self.cfg.logging.every_steps and step != self.cfg.train.max_steps:
            return
        logs = {"loss": self.accelerator.reduce(self.loss / self.steps, reduction="mean").item(), "lr": lr,
                "steps_per_s": self.steps / (time.perf_counter() - self.start)}
        if grad_norm is not None:
            logs["grad_norm"] = float(grad_norm)
        if torch.cuda.is_available():
            logs["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        self.accelerator.log(logs, step=step)
        if self.accelerator.is_main_process:  # plain-text copy; a resumed run appends (the last line of a step wins)
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with open(self.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **logs}) + "\n")
        logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))
        self.loss, self.steps, self.start = torch.zeros_like(self.loss), 0, time.perf_counter()


def save_checkpoint(accelerator: Any, cfg: DictConfig, out_dir: Path, step: int) -> None:
    """`checkpoint-N/` (accelerate state + unet/ via the registered hook + config.yaml), written atomically
    (fffvdi/checkpointing.py); older ones are pruned only once it is complete."""
    from fffvdi.checkpointing import commit_checkpoint, prune_checkpoints, staging_dir

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


def validate(accelerator: Any, cfg: DictConfig, pipe: Any, raw_unet: Any, ema: Any,
             params: list[torch.nn.Parameter], clip: tuple, out_dir: Path, step: int) -> None:
    """Inpaint the validation clip (EMA weights if enabled) and write `validation/step-N.mp4` (+ TensorBoard)."""
    from fffvdi.io import write_video
    from fffvdi.training import side_by_side

    if accelerator.is_main_process:
        raw_unet.eval()
        frozen = (pipe.c.vae, pipe.c.image_encoder)
        for m in frozen if cfg.train.offload_frozen else ():
            m.to(accelerator.device)
        if ema is not None:  # validate the EMA weights, then put the training weights back
            ema.store(params)
            ema.copy_to(params)
        with accelerator.autocast():
            result = pipe(*clip, generator=torch.Generator().manual_seed(cfg.validation.seed))
        if ema is not None:
            ema.restore(params)
        for m in frozen if cfg.train.offload_frozen else ():
            m.to("cpu")
        raw_unet.train()
        video = side_by_side(clip[0], clip[1], result)  # [F, H, 3W, 3]
        path = write_video(out_dir / "validation" / f"step-{step}.mp4", video, cfg.validation.fps)
        if cfg.logging.report_to == "tensorboard":
            writer = accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image("validation", video[len(video) // 2], step, dataformats="HWC")
        logger.info("validation video %s", path)
    accelerator.wait_for_everyone()


def save_final(accelerator: Any, cfg: DictConfig, raw_unet: Any, ema: Any, params: list[torch.nn.Parameter],
               out_dir: Path) -> None:
    """`unet/` (EMA weights if enabled; LoRA adapters merged) + config.yaml, once every process is known to hold the
    same weights; with lora.merge_on_save=false `lora/` (adapters + propagation module) instead of unet/."""
    from fffvdi.lora import lora_base
    from fffvdi.training import check_ranks_agree

    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        check_ranks_agree(accelerator, params)
    if ema is not None:
        ema.copy_to(params)
    if accelerator.is_main_process:
        from fffvdi.checkpointing import write_folder
        from fffvdi.lora import merge_lora, save_lora

        lora, merge = cfg.lora.enabled, cfg.lora.merge_on_save
        name = "lora" if lora and not merge else "unet"
        if name == "lora":
            write_folder(out_dir / name, lambda tmp: save_lora(raw_unet, tmp, cfg.lora, lora_base(cfg)))
        else:
            write_folder(out_dir / name, (merge_lora(raw_unet) if lora else raw_unet).save_pretrained)
        save_config(cfg, out_dir / "config.yaml")
        logger.info("saved the trained UNet%s to %s", " (LoRA merged)" if lora and merge else "", out_dir / name)
