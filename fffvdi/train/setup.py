"""Setting a run up: accelerator, run folder and seeds; the model with its trainable weights; optimizer and LR
schedule; EMA; and the state of a resumed checkpoint. Each reads the config sections it needs."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from omegaconf import DictConfig

from fffvdi.config import dtype_from_name, save_config
from fffvdi.errors import ConfigError, InputError
from fffvdi.models.loading import load_svd_components, resolve_dtype
from fffvdi.train.checkpointing import checkpoint_step, prepare_run_dir, resolve_resume
from fffvdi.train.lora import apply_lora
from fffvdi.train.trainable import select_trainable

logger = logging.getLogger("fffvdi.train")

MIXED_PRECISIONS = ("no", "fp16", "bf16")  # train.mixed_precision: accelerate's autocast (AMP keeps float32 weights)
WEIGHT_DTYPES = ("auto", "float32", "float16", "bfloat16")  # train.weight_dtype of the frozen VAE/CLIP
OPTIMIZERS = ("adamw", "adamw8bit")  # optim.name: torch's AdamW | bitsandbytes' AdamW8bit (CUDA only)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "piecewise_constant")  # optim.lr_scheduler: diffusers.optimization.get_scheduler names


def setup_run(cfg: DictConfig) -> tuple[Any, Path, Optional[Path]]:
    """Accelerator (DDP / DeepSpeed / one device, from `accelerate launch`), run folder, seeds, logging.

    Returns `(accelerator, output_dir, checkpoint_to_resume_or_None)`.
    """
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


def resolve_weight_dtype(name: str, mixed_precision: str, device: torch.device) -> torch.dtype:
    """Dtype of the frozen VAE/CLIP: 'auto' follows mixed_precision; half falls back to float32 on CPU."""
    if name == "auto":
        name = {"fp16": "float16", "bf16": "bfloat16"}.get(mixed_precision, "float32")
    return resolve_dtype(dtype_from_name(name), device)


def setup_model(cfg: DictConfig, accelerator: Any) -> tuple[Any, list[torch.nn.Parameter], torch.dtype]:
    """SVD components with the FFF-VDI UNet in float32 (AMP trains float32 weights), VAE/CLIP frozen in
    `train.weight_dtype` (on the CPU with train.offload_frozen), LoRA adapters with lora.enabled; returns
    `(components, trainable_params, weight_dtype)`."""
    t = cfg.train
    weight_dtype = resolve_weight_dtype(t.weight_dtype, t.mixed_precision, accelerator.device)
    components = load_svd_components(cfg.model.pretrained, cfg.model.checkpoint, dtype=torch.float32,
                                     device=accelerator.device, variant=cfg.model.variant,
                                     propagation=dict(cfg.model.propagation))
    for frozen in (components.vae, components.image_encoder):
        frozen.to(device="cpu" if t.offload_frozen else accelerator.device, dtype=weight_dtype)
    unet = components.unet
    if cfg.lora.enabled:
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


def optimizer_problem(o: DictConfig, device_type: Optional[str]) -> Optional[ConfigError]:
    """Why the `optim` section cannot build an optimizer for weights on `device_type` (None: not known yet): the
    replaced key optim.use_8bit_adam, an unknown name, or 8-bit AdamW without bitsandbytes or off CUDA."""
    if o.get("use_8bit_adam"):  # the old key: false (as in older YAML files) still means adamw
        return ConfigError("optim.use_8bit_adam was replaced: set optim.name=adamw8bit (or adamw) and remove "
                           "optim.use_8bit_adam", key="optim.use_8bit_adam")
    name = o.get("name", "adamw")
    if name not in OPTIMIZERS:
        return ConfigError(f"optim.name={name!r}: use adamw or adamw8bit", key="optim.name")
    if name == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        return ConfigError("optim.name=adamw8bit needs bitsandbytes: pip install bitsandbytes (or set "
                           "optim.name=adamw)", key="optim.name")
    if name == "adamw8bit" and device_type == "cpu":
        return ConfigError("optim.name=adamw8bit needs the trainable weights on a CUDA GPU (bitsandbytes' 8-bit "
                           "kernels); use optim.name=adamw on the CPU", key="optim.name")
    return None


def build_optimizer(params: list[torch.nn.Parameter], o: DictConfig) -> torch.optim.Optimizer:
    """optim.name: adamw (torch AdamW) | adamw8bit (bitsandbytes' AdamW8bit, parameters on a CUDA GPU)."""
    problem = optimizer_problem(o, "cuda" if all(p.device.type == "cuda" for p in params) else "cpu")
    if problem is not None:
        raise problem
    if o.get("name", "adamw") == "adamw8bit":
        import bitsandbytes as bnb

        cls = bnb.optim.AdamW8bit
    else:
        cls = torch.optim.AdamW
    return cls(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)


def setup_optimizer(cfg: DictConfig, params: list[torch.nn.Parameter], accelerator: Any) -> tuple[Any, Any]:
    """AdamW (or 8-bit AdamW) and the LR schedule; the prepared scheduler steps once per process per step."""
    from diffusers.optimization import get_scheduler

    optimizer = build_optimizer(params, cfg.optim)
    lr_scheduler = get_scheduler(cfg.optim.lr_scheduler, optimizer,
                                 num_warmup_steps=cfg.optim.warmup_steps * accelerator.num_processes,
                                 num_training_steps=cfg.train.max_steps * accelerator.num_processes)
    return optimizer, lr_scheduler


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
