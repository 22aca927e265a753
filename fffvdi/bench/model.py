"""Model-level benchmark inputs shared by scripts/benchmark.py and scripts/gpu_check.py: UNet call inputs with
masks and flows at latent size, and one EDM training step (forward + backward + optimizer) as a callable."""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional

import numpy as np
import torch

from fffvdi.bench import presets
from fffvdi.diffusion.conditioning import Conditioning
from fffvdi.diffusion.edm import EDMDenoiser


def latent_conditions(b: int, f: int, h: int, w: int, lat: int, device: torch.device):
    """Masks `[B, F, 1, h, w]` (moving rectangle) and smooth flows `[B, F-1, 2, h, w]` at latent size."""
    masks = presets.SyntheticVideo(f, h * lat, w * lat).read_masks(0, f)[:, ::lat, ::lat]  # nearest downscale
    masks = torch.from_numpy(np.ascontiguousarray(masks)).float()[None, :, None].repeat(b, 1, 1, 1, 1)
    g = torch.Generator().manual_seed(1)
    flows_fw = 0.25 + 0.1 * torch.randn(b, f - 1, 2, h, w, generator=g)  # ~2 px per frame in pixel units / 8
    return masks.to(device), flows_fw.to(device), (-flows_fw).to(device)


def unet_inputs(unet: torch.nn.Module, b: int, f: int, h: int, w: int, device: torch.device, dtype: torch.dtype):
    """`(sample [B,F,8,h,w], timestep, image embeds, added time ids)` for one denoising call at sigma 10."""
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(b, f, 8, h, w, generator=g).to(device, dtype)
    embeds = torch.randn(b, 1, unet.config.cross_attention_dim, generator=g).to(device, dtype)
    ids = torch.tensor([[7.0, 127.0, 0.02]]).repeat(b, 1).to(device, dtype)
    timestep = torch.full((b,), 0.25 * math.log(10.0)).to(device, dtype)  # c_noise at sigma 10
    return sample, timestep, embeds, ids


def train_step(unet: torch.nn.Module, optimizer: torch.optim.Optimizer, f: int, h: int, w: int,
               device: torch.device, amp_dtype: Optional[torch.dtype] = None) -> Callable[[], None]:
    """One EDM loss forward + backward + optimizer step on a batch of 1 at latent size `h x w`; `amp_dtype` turns
    on autocast (fp32 master weights; float16 with a gradient scaler)."""
    denoiser = EDMDenoiser(unet)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, f, 4, h, w, generator=g).to(device)
    masks, fw, bw = latent_conditions(1, f, h, w, 8, device)
    cond = Conditioning(torch.randn(1, f, 4, h, w, generator=g).to(device),
                        torch.randn(1, 1, unet.config.cross_attention_dim, generator=g).to(device),
                        torch.tensor([[7.0, 127.0, 0.05]], device=device), masks, fw, bw)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    noise_gen = torch.Generator(device).manual_seed(0)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        with amp:
            loss, _ = denoiser.loss(z0, cond, generator=noise_gen)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step
