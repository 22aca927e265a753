"""Helpers of scripts/train.py: trainable weights, optimizer, run folders, checkpoint hooks, batch encoding,
validation (flows: fffvdi/train_flows.py; LoRA: fffvdi/lora.py; conditioning cache: fffvdi/train_cache.py)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fffvdi.edm import Conditioning, added_time_ids, sample_cond_aug
from fffvdi.checkpointing import clear_run, crash_point
from fffvdi.errors import ConfigError, InputError
from fffvdi.conditioning import Conditioner, clip_source_image

logger = logging.getLogger("fffvdi.train")


# --- configuration checks and trainable weights ----------------------------------------------------
def resolve_weight_dtype(name: str, mixed_precision: str, device: torch.device) -> torch.dtype:
    """Dtype of the frozen VAE/CLIP: 'auto' follows mixed_precision; half falls back to float32 on CPU."""
    from fffvdi.config import dtype_from_name
    from fffvdi.models.loading import resolve_dtype

    if name == "auto":
        name = {"fp16": "float16", "bf16": "bfloat16"}.get(mixed_precision, "float32")
    return resolve_dtype(dtype_from_name(name), device)


def select_trainable(module: torch.nn.Module, patterns: Sequence[str], key: str = "trainable") -> list[torch.nn.Parameter]:
    """Freeze every parameter except those whose name contains one of `patterns` (config `key`); returns the trainable
    ones."""
    if not patterns:
        raise ConfigError("trainable is empty; list name patterns, e.g. trainable=[propagation.,temporal_transformer_blocks]",
                          key=key)
    named = list(module.named_parameters())
    unused = [p for p in patterns if not any(p in name for name, _ in named)]
    if unused:
        raise ConfigError(f"{key} pattern {unused[0]!r} matches no parameter of the FFF-VDI UNet; use substrings of "
                          "names like 'propagation.', 'temporal_transformer_blocks', 'time_pos_embed', 'time_mixer'",
                          key=key)
    params = []
    for name, param in named:
        param.requires_grad_(any(p in name for p in patterns))
        if param.requires_grad:
            params.append(param)
    return params


def build_clip_dataset(cfg: DictConfig, seed: int, augment: bool = True) -> torch.utils.data.Dataset:
    """VideoClipDataset from the `data` section; augment=False turns flips and time reversal off (validation)."""
    from fffvdi.data.youtube_vos import VideoClipDataset

    d = cfg.data
    stride = OmegaConf.to_object(d.frame_stride) if OmegaConf.is_config(d.frame_stride) else d.frame_stride  # int | list
    return VideoClipDataset(
        d.root, num_frames=d.num_frames, frame_stride=stride, size=tuple(d.size), hflip_prob=d.hflip if augment else 0.0,
        reverse_prob=d.time_reverse if augment else 0.0, masks=OmegaConf.to_container(d.masks), seed=seed,
        video_list=d.video_list, samples_per_epoch=d.samples_per_epoch,
    )


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """{'train.lr': 1e-05, ...} with lists and None as strings (what TensorBoard's hparams accept)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            out[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def build_optimizer(params: list[torch.nn.Parameter], o: DictConfig) -> torch.optim.Optimizer:
    """optim.name: adamw (torch AdamW) | adamw8bit (bitsandbytes' AdamW8bit, parameters on a CUDA GPU)."""
    if o.get("use_8bit_adam"):  # the old key: false still means adamw
        raise ConfigError("optim.use_8bit_adam was replaced: set optim.name=adamw8bit (or adamw) and remove "
                          "optim.use_8bit_adam", key="optim.use_8bit_adam")
    name = o.get("name", "adamw")
    if name == "adamw":
        cls = torch.optim.AdamW
    elif name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("optim.name=adamw8bit needs bitsandbytes: pip install bitsandbytes (or set "
                              "optim.name=adamw)", key="optim.name") from None
        if any(p.device.type != "cuda" for p in params):
            raise ConfigError("optim.name=adamw8bit needs the trainable weights on a CUDA GPU (bitsandbytes' 8-bit "
                              "kernels); use optim.name=adamw on the CPU", key="optim.name")
        cls = bnb.optim.AdamW8bit
    else:
        raise ConfigError(f"optim.name={name!r}: use adamw or adamw8bit", key="optim.name")
    return cls(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)


# --- run folder -----------------------------------------------------------------------------------
def prepare_run_dir(output_dir: str | Path, resuming: bool, overwrite: bool, main: bool = True) -> Path:
    """Refuse a run folder holding checkpoints unless resuming, or clear them with overwrite (only `main` writes)."""
    out = Path(output_dir)
    old = clear_run(out)
    if old and not resuming:
        if not overwrite:
            raise InputError(f"checkpoint.output_dir={out} already holds a run ({old[0].name}); pass "
                             "checkpoint.resume_from_checkpoint=latest, checkpoint.overwrite=true or a new output_dir")
        for path in old if main else ():
            shutil.rmtree(path)
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create checkpoint.output_dir={out} ({err.strerror}); choose a writable "
                             "folder") from None
    return out


def register_unet_checkpoint_hooks(accelerator: Any, cfg: DictConfig | None = None) -> None:
    """Make accelerator.save_state/load_state store the UNet as CKPT/unet (FFFVDIUNet.save_pretrained) only once, or
    with LoRA (`cfg.lora.enabled`) only its adapters + propagation module as CKPT/lora (fffvdi/lora.py)."""
    from fffvdi.lora import load_lora, lora_base, save_lora
    from fffvdi.models.unet import FFFVDIUNet

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


# --- batch -> target latents + conditioning --------------------------------------------------------
def check_ranks_agree(accelerator: Any, params: Sequence[torch.nn.Parameter]) -> None:
    """Raise unless every process holds the same trainable weights (DDP's gradient all-reduce keeps them equal;
    if it broke, each rank would silently train its own model and only rank 0's would be saved)."""
    sums = torch.stack([p.detach().double().sum() for p in params]).to(accelerator.device)  # [P]
    everyone = accelerator.gather(sums[None])  # [R, P]
    spread = (everyone - everyone[:1]).abs().max().item()
    if spread > 1e-6 * max(1.0, everyone.abs().max().item()):
        raise RuntimeError(
            f"the {accelerator.num_processes} training processes hold different weights (max difference of "
            f"parameter sums {spread:.3g}): gradients were not synchronised; check the distributed setup"
        )
    logger.info("weights agree across %d processes", accelerator.num_processes)


def step_generator(seed: int, micro_step: int, rank: int, device: torch.device, processes: int = 1) -> torch.Generator:
    """RNG of one batch: a function of its global index `micro_step * processes + rank`, so a resumed run draws the
    noise of an uninterrupted one, and N processes draw what one process accumulating N micro-steps would."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + (micro_step * processes + rank) * 1_009)


def cfg_dropout(u: torch.Tensor, p_embeds: float, p_latents: float, p_both: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exclusive events of one uniform draw `u [B]`: [0, p_both) both, then embeds only, then latents only."""
    both = u < p_both
    embeds_only = (u >= p_both) & (u < p_both + p_embeds)
    latents_only = (u >= p_both + p_embeds) & (u < p_both + p_embeds + p_latents)
    return both | embeds_only, both | latents_only


def encode_batch(conditioner: Conditioner, frames: torch.Tensor, masks: torch.Tensor, flows_fw: torch.Tensor,
                 flows_bw: torch.Tensor, t: DictConfig, generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
    """Clean latents z0 and the (CFG-dropped) conditioning of a batch, made by the same `Conditioner` as inference.

    frames `[B, F, 3, H, W]` in [-1, 1]; masks `[B, F, 1, H, W]` (1 = hole); raw pixel flows `[B, F-1, 2, H, W]`.
    """
    b = frames.shape[0]
    dev = frames.device
    flows_fw, flows_bw, flows_fw_l, flows_bw_l, masks_l = conditioner.complete_flows(flows_fw, flows_bw, masks)
    z0 = conditioner.encode_targets(frames, generator)
    # Conditioning augmentation: pixel noise of strength sigma_c on the masked frames, told to the UNet as a time id.
    sigma_c = sample_cond_aug(b, t.cond_aug_mean, t.cond_aug_std, generator=generator, device=dev)  # [B]
    masked = frames * (1 - masks)
    noise = torch.randn(masked.shape, generator=generator, device=dev, dtype=masked.dtype)
    draw = generator if t.cond_latents == "sample" else None  # official: a posterior sample; ours: its mode
    cond_latents = conditioner.encode(masked + sigma_c.view(-1, 1, 1, 1, 1) * noise, draw)  # unscaled
    embeds = conditioner.clip_embed(clip_source_image(t.clip_source, frames, masks, flows_fw, flows_bw))  # [B, 1, D]
    time_ids = added_time_ids(t.fps, t.motion_bucket_id, sigma_c, b, device=dev)
    cond = Conditioning(cond_latents, embeds, time_ids, masks_l, flows_fw_l, flows_bw_l)
    drop_e, drop_l = cfg_dropout(torch.rand(b, generator=generator, device=dev), t.drop_image_embeds,
                                 t.drop_cond_latents, t.drop_both)
    return z0, cond.drop(drop_e, drop_l)


# --- validation -----------------------------------------------------------------------------------
def inference_config(cfg: DictConfig) -> DictConfig:
    """InferenceConfig matching the training setup (canvas = data.size, same micro-conditioning and clip source)."""
    from fffvdi.inference_config import InferenceConfig

    v, t = cfg.validation, cfg.train
    flow = {k: cfg.flow[k] for k in ("method", "raft_weights", "raft_iters", "completion")}
    sampling = dict(num_steps=v.num_steps, min_guidance_scale=v.min_guidance_scale, max_guidance_scale=v.max_guidance_scale,
                    fps=t.fps, motion_bucket_id=t.motion_bucket_id, noise_aug_strength=v.noise_aug_strength,
                    clip_source=t.clip_source, first_frame_filling=v.first_frame_filling, seed=v.seed)
    window = dict(height=cfg.data.size[0], width=cfg.data.size[1], num_frames=cfg.data.num_frames,
                  overlap=min(4, cfg.data.num_frames - 1), decode_chunk_size=t.vae_chunk_size)
    model = OmegaConf.to_container(cfg.model)  # the same keys, less training's device choice
    model["device"] = "auto"
    return OmegaConf.merge(OmegaConf.structured(InferenceConfig),
                           {"model": model, "flow": flow, "sampling": sampling, "window": window})


def validation_clip(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames `[F, H, W, 3]` and masks `[F, H, W]` in {0, 1}: validation.video/mask or a dataset clip."""
    v, n = cfg.validation, cfg.data.num_frames
    if v.video is not None:
        from fffvdi.config import MaskConfig
        from fffvdi.io import MaskSource, open_video

        video = open_video(v.video)
        m = MaskConfig()
        masks = MaskSource.for_video(v.mask, video, threshold=m.threshold, dilate=m.dilate, resize=m.resize)
        stop = min(len(video), n)
        return video.read(0, stop), masks.read(0, stop)
    clips = build_clip_dataset(cfg, seed=v.seed, augment=False)
    item = clips[v.clip_index % len(clips)]
    frames = ((item["frames"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return frames.permute(0, 2, 3, 1).numpy(), item["masks"][:, 0].to(torch.uint8).numpy()


def side_by_side(frames: np.ndarray, masks: np.ndarray, result: np.ndarray) -> np.ndarray:
    """uint8 `[F, H, 3W, 3]`: masked input (hole in grey) | result | ground truth."""
    masked = np.where(masks[..., None] > 0, np.uint8(128), frames)
    return np.concatenate([masked, result, frames], axis=2)
