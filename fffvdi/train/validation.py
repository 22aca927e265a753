"""Validation during training: the inference config matching the run, the clip (validation.video/mask or a
dataset clip), and `validation/step-N.mp4` (masked input | result | ground truth) rendered by the pipeline."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fffvdi.config import FlowConfig, MaskConfig
from fffvdi.inpaint.config import InferenceConfig
from fffvdi.io import MaskSource, open_video, write_video
from fffvdi.train.data import build_clip_dataset

logger = logging.getLogger("fffvdi.train")


def inference_config(cfg: DictConfig) -> DictConfig:
    """InferenceConfig matching the training setup (canvas = data.size, same micro-conditioning and clip source)."""
    v, t = cfg.validation, cfg.train
    flow = {f.name: cfg.flow[f.name] for f in dataclasses.fields(FlowConfig)}  # the training flows, weights included
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


def validate(accelerator: Any, cfg: DictConfig, pipe: Any, raw_unet: Any, ema: Any,
             params: list[torch.nn.Parameter], clip: tuple, out_dir: Path, step: int) -> None:
    """Inpaint the validation clip (EMA weights if enabled) and write `validation/step-N.mp4` (+ TensorBoard)."""
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
