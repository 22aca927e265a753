"""Benchmark subjects: the model presets (tiny, or SVD-XT's architecture with random weights) and a synthetic video
read lazily like a real one."""
from __future__ import annotations

import numpy as np
import torch

from fffvdi.data.synthetic import smooth_texture
from fffvdi.models.loading import SVDComponents
from fffvdi.models.tiny import build_tiny_components
from fffvdi.models.unet import FFFVDIUNet

# SVD-XT's published component configs (stabilityai/stable-video-diffusion-img2vid-xt{,-1-1}); written out
# rather than taken from library defaults, which differ for the VAE (diffusers' default is a 1-level toy).
SVDXT_UNET_CONFIG = dict(
    sample_size=96, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
    num_attention_heads=(5, 10, 20, 20), addition_time_embed_dim=256, projection_class_embeddings_input_dim=768,
    transformer_layers_per_block=1, num_frames=25,
)
SVDXT_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=768,
    scaling_factor=0.18215, force_upcast=True,
)
# OpenCLIP ViT-H/14 as transformers' CLIPVisionModelWithProjection (SVD's image_encoder/config.json).
SVDXT_CLIP_CONFIG = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=1024, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-5,
)
PRESETS = ("tiny", "svd-xt")


def build_components(
    preset: str, device: torch.device, dtype: torch.dtype,
    parts: tuple[str, ...] = ("unet", "vae", "image_encoder"), seed: int = 0,
):
    """In-memory `SVDComponents` of a preset with random weights; parts not listed are None (saves time and RAM)."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is unknown; use one of {PRESETS}")
    with torch.device(device):  # initialise on the target device: fast on GPU, and no CPU copy of a 6 GB UNet
        tiny = build_tiny_components(seed)  # also supplies the feature extractor and SVD's scheduler config
        comps = _build_parts(preset, parts, tiny, seed)
    if comps["unet"] is not None:
        torch.manual_seed(seed + 3)
        comps["unet"] = FFFVDIUNet(comps["unet"])
    for module in comps.values():
        if module is not None:
            module.to(device).eval().requires_grad_(False)
            if dtype != torch.float32:  # cast only when asked: diffusers warns on every dtype cast
                module.to(dtype)
    return SVDComponents(feature_extractor=tiny["feature_extractor"], scheduler=tiny["scheduler"], **comps)


def _build_parts(preset: str, parts: tuple[str, ...], tiny: dict, seed: int) -> dict:
    """The requested UNet / VAE / image encoder of a preset (others None), random weights."""
    comps = dict(unet=None, vae=None, image_encoder=None)
    if preset == "tiny":
        comps.update({k: tiny[k] for k in parts})
    else:
        from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        torch.manual_seed(seed)
        makers = dict(
            unet=lambda: UNetSpatioTemporalConditionModel(**SVDXT_UNET_CONFIG),
            vae=lambda: AutoencoderKLTemporalDecoder(**SVDXT_VAE_CONFIG),
            image_encoder=lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**SVDXT_CLIP_CONFIG)),
        )
        comps.update({k: makers[k]() for k in parts})
    return comps


def count_params_m(module: torch.nn.Module) -> float:
    """Parameter count in millions."""
    return sum(p.numel() for p in module.parameters()) / 1e6


class SyntheticVideo:
    """A video made on demand: a panning texture and a moving rectangle mask; no frame is stored.

    `read_frames(start, stop)` and `read_masks(start, stop)` fit `fffvdi.inpaint.windows.run_windows`, so
    a 200-frame video costs the memory of one window.
    """

    def __init__(self, num_frames: int, height: int, width: int, seed: int = 0, mask_fraction: float = 1 / 16) -> None:
        self.num_frames, self.height, self.width = num_frames, height, width
        self.mask_side = mask_fraction**0.5  # the rectangle's side as a fraction of the frame's
        self.texture = smooth_texture(height, width, np.random.default_rng(seed))  # one frame of memory

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """uint8 `[n, H, W, 3]`: the texture shifted 2 px right and 1 px down per frame."""
        return np.stack([np.roll(self.texture, (t, 2 * t), axis=(0, 1)) for t in range(start, stop)])

    def read_masks(self, start: int, stop: int) -> np.ndarray:
        """uint8 `[n, H, W]`: a rectangle (`mask_fraction` of the area; default a quarter of each side) bouncing
        horizontally at 3 px/frame."""
        h, w = self.height, self.width
        mh, mw = max(int(round(h * self.mask_side)), 1), max(int(round(w * self.mask_side)), 1)
        span = max(w - mw, 1)
        out = np.zeros((stop - start, h, w), np.uint8)
        for i, t in enumerate(range(start, stop)):
            x = (3 * t) % (2 * span)
            x = x if x < span else 2 * span - x  # bounce off the right border
            out[i, (h - mh) // 2 : (h - mh) // 2 + mh, x : x + mw] = 1
        return out
