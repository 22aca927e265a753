"""Tiny, seeded, randomly initialised SVD components in the real diffusers folder layout.

Same classes as stabilityai/stable-video-diffusion-img2vid-xt(-1-1), so every loading path is
exercised offline; a few MB on disk and seconds on CPU. Outputs are noise, not video.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

# SVD's scheduler settings (scheduler/scheduler_config.json of the real model).
SVD_SCHEDULER_CONFIG = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True,
    sigma_min=0.002, sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous",
    steps_offset=1,
)

# The UNet is SVD's architecture shrunk: two levels, one layer each, 32-d cross attention.
TINY_UNET_CONFIG = dict(
    sample_size=8, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
    num_attention_heads=(2, 4), addition_time_embed_dim=32,
    projection_class_embeddings_input_dim=96,  # 3 added time ids x addition_time_embed_dim
    transformer_layers_per_block=1, num_frames=14,
)

# Four encoder levels keep SVD's 8x spatial downscale; 32 channels is the GroupNorm minimum.
TINY_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4,
    sample_size=64, scaling_factor=0.18215,
)

# CLIP ViT shrunk; image_size stays 224 because the SVD preprocessing resizes to 224.
TINY_CLIP_CONFIG = dict(
    hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    image_size=224, patch_size=32, projection_dim=32, num_channels=3,
)


def build_tiny_components(seed: int = 0) -> dict:
    """Build the five SVD components with tiny random weights (deterministic for a seed)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**TINY_UNET_CONFIG)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(**TINY_VAE_CONFIG)
    torch.manual_seed(seed + 2)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_CONFIG))
    feature_extractor = CLIPImageProcessor(
        crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224}, do_center_crop=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG)
    return dict(unet=unet, vae=vae, image_encoder=image_encoder, feature_extractor=feature_extractor, scheduler=scheduler)


def save_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny components to `out_dir` in SVD's diffusers layout (model_index.json + subfolders)."""
    from diffusers import StableVideoDiffusionPipeline

    out_dir = Path(out_dir)
    pipe = StableVideoDiffusionPipeline(**build_tiny_components(seed))
    pipe.save_pretrained(out_dir)  # writes model_index.json and one folder per component
    return out_dir


def is_tiny_model(path: str | Path) -> bool:
    """Whether `path` is a folder that save_tiny_model wrote (its UNet has the tiny widths)."""
    try:
        config = json.loads((Path(path).expanduser() / "unet" / "config.json").read_text(encoding="utf-8"))
        return list(config["block_out_channels"]) == list(TINY_UNET_CONFIG["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):  # a hub id, another layout: not the tiny model
        return False
