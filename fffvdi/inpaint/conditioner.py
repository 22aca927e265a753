"""Masked-video conditioning, one implementation for inference and training.

`Conditioner` turns a clip into what the FFF-VDI UNet is conditioned on: completed flows (pixel and
latent size) with latent masks, VAE latents of the masked frames (chunked), the clean target latents
(training), and the CLIP embedding of the chosen frame-0 image. The pipeline and the training loop
both build one from the SVD components and a `flow` config section, so they cannot drift apart.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from omegaconf import DictConfig

from fffvdi.flow.completion import build_flow_completer
from fffvdi.flow.estimators import build_flow_estimator
from fffvdi.flow.resize import release_latent_inputs, resize_flows_and_masks
from fffvdi.propagate.pixels import propagate_clip

CLIP_SOURCES = ("masked", "filled", "raw")  # the image CLIP embeds (see clip_source_image)


def build_flow_fn(flow_cfg: DictConfig, device: torch.device):
    """Flow estimator and completer from a config's `flow` section."""
    kwargs = {}
    if flow_cfg.method.startswith("raft"):
        kwargs = dict(weights_path=flow_cfg.raft_weights, iters=flow_cfg.raft_iters, device=device)
    estimator = build_flow_estimator(flow_cfg.method, **kwargs)
    weights = dict(weights=flow_cfg.get("completion_weights")) if flow_cfg.completion == "propainter" else {}
    return estimator, build_flow_completer(flow_cfg.completion, **weights)  # propainter: the only one with weights


def clip_source_image(
    source: str, frames: torch.Tensor, masks: torch.Tensor, flows_fw: torch.Tensor, flows_bw: torch.Tensor
) -> torch.Tensor:
    """Image `[B, 3, H, W]` the CLIP embedding sees: frame 0 masked, hole-filled by propagation, or raw."""
    masked = frames * (1 - masks)
    if source == "filled":  # frame 0 with its hole filled from later frames by traced pixel propagation
        out = []
        for i in range(frames.shape[0]):
            filled, _ = propagate_clip(
                rearrange(masked[i], "f c h w -> f h w c").float().cpu().numpy(), masks[i, :, 0].float().cpu().numpy(),
                flows_fw[i].float().cpu().numpy(), flows_bw[i].float().cpu().numpy(), targets=[0],
            )
            out.append(torch.from_numpy(filled[0]).permute(2, 0, 1))
        return torch.stack(out).to(frames.device, frames.dtype)
    return frames[:, 0] if source == "raw" else masked[:, 0]


Placement = Callable[[torch.nn.Module], ContextManager[torch.nn.Module]]  # module -> context using it where it runs


def stay(module: torch.nn.Module) -> ContextManager[torch.nn.Module]:
    """The default placement: the module stays where it is."""
    return contextlib.nullcontext(module)


def offloader(device: torch.device) -> Placement:
    """A placement that brings a module parked on the CPU to `device` for one use, then parks it again (the pipeline's
    memory.offload=model, training's train.offload_frozen)."""

    @contextlib.contextmanager
    def on_device(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        module.to(device)
        try:
            yield module
        finally:
            module.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()

    return on_device


class Conditioner:
    """Flows, VAE latents and CLIP embeddings of clips `[B, F, ...]`, with the VAE/CLIP run in `dtype`.

    `chunk` frames go through the VAE at once; `on_device(module)` is a context manager that places a
    module for its use (the pipeline's CPU offloading), by default a no-op.
    """

    def __init__(
        self, components, flow_cfg: DictConfig, device: torch.device, dtype: torch.dtype, chunk: int,
        on_device: Optional[Placement] = None,
    ) -> None:
        self.c, self.device, self.dtype, self.chunk = components, device, dtype, int(chunk)
        self.flow_fn, self.completer = build_flow_fn(flow_cfg, device)
        self.on_device = on_device or stay
        self.flow_units = getattr(components.unet, "flow_units", "cells")  # how the UNet wants latent-size flows

    def complete_flows(self, flows_fw: torch.Tensor, flows_bw: torch.Tensor, masks: torch.Tensor) -> tuple:
        """Complete pixel flows `[B, F-1, 2, H, W]` inside `masks [B, F, 1, H, W]`; also return them at latent size.

        Returns (flows_fw, flows_bw) completed, then (flows_fw, flows_bw, masks) at latent resolution as the
        propagation module's `flow_units` asks: cells (flows rescaled to latent cells, masks at cell centres) or
        pixels (the release's: flows left in image pixels, masks at cells' top-left pixels).
        """
        flows_fw, flows_bw = self.completer.complete_pair(flows_fw.float(), flows_bw.float(), masks)
        lat_size = (masks.shape[-2] // self.c.vae_scale_factor, masks.shape[-1] // self.c.vae_scale_factor)
        resize = release_latent_inputs if self.flow_units == "pixels" else resize_flows_and_masks
        flows_fw_l, masks_l = resize(flows_fw, masks, lat_size)
        flows_bw_l, _ = resize(flows_bw, None, lat_size)
        return flows_fw, flows_bw, flows_fw_l, flows_bw_l, masks_l

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, sample: Optional[torch.Generator] = None) -> torch.Tensor:
        """VAE latents `[B, F, 4, h, w]` (unscaled, as SVD conditions) of `pixels [B, F, 3, H, W]`: the posterior's
        mode, or a draw from it with the `sample` generator (the official training does that)."""
        return self.encode_with(pixels, lambda d: d.mode() if sample is None else d.sample(sample))

    def encode_with(self, pixels: torch.Tensor, take: Callable[[Any], torch.Tensor]) -> torch.Tensor:
        """`take(posterior)` of every frame of `pixels [B, F, 3, H, W]`, VAE-encoded `chunk` frames at a time, as a
        float32 `[B, F, ...]` tensor (the one chunked encoding loop: latents, training targets, cached posteriors)."""
        flat = rearrange(pixels, "b f c h w -> (b f) c h w")
        with self.on_device(self.c.vae) as vae:
            out = [take(vae.encode(part.to(self.dtype)).latent_dist).float() for part in flat.split(self.chunk)]
        return rearrange(torch.cat(out), "(b f) c h w -> b f c h w", b=pixels.shape[0])

    @torch.no_grad()
    def encode_targets(self, frames: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Scaled clean latents `[B, F, 4, h, w]` (posterior sample * scaling_factor) of `frames`: training targets."""
        return self.encode_with(frames, lambda d: d.sample(generator)) * self.c.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels `[B, F, 3, H, W]` in [-1, 1] from scaled latents, `chunk` frames at a time (temporal decoder)."""
        flat = rearrange(latents, "b f c h w -> (b f) c h w") / self.c.vae.config.scaling_factor
        with self.on_device(self.c.vae) as vae:
            out = [vae.decode(p.to(self.dtype), num_frames=p.shape[0]).sample.float() for p in flat.split(self.chunk)]
        return rearrange(torch.cat(out), "(b f) c h w -> b f c h w", b=latents.shape[0])

    @torch.no_grad()
    def clip_embed(self, image: torch.Tensor) -> torch.Tensor:
        """CLIP image embedding `[B, 1, D]` of `image [B, 3, H, W]` in [-1, 1] (SVD's 224 px preprocessing)."""
        fe = self.c.feature_extractor
        x = F.interpolate((image + 1) / 2, size=(224, 224), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(fe.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(fe.image_std, device=x.device).view(1, 3, 1, 1)
        x = (x.clamp(0, 1) - mean) / std
        with self.on_device(self.c.image_encoder) as enc:
            embeds = enc(x.to(self.dtype)).image_embeds  # [B, D]
        return embeds.float()[:, None]
