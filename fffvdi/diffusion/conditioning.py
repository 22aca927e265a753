"""What the UNet sees besides the noisy latent, and SVD's micro-conditioning recipe, for sampling and training alike.

`Conditioning` holds the conditioning tensors of a batch. The recipe around it is written once here: noise
augmentation of the conditioning frames (`noise_augment`), the added time ids `[fps, motion_bucket_id,
noise_aug_strength]` (`svd_conditioning`), and classifier-free-guidance dropout (`cfg_dropout`, `drop_for_cfg`),
whose dropped inputs are exactly the zeros `Conditioning.unconditional` gives the sampler.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence

import torch
from torch import Tensor

from fffvdi.errors import InputError


def noise_augment(x: Tensor, strength: float | Tensor, noise: Tensor) -> Tensor:
    """SVD's conditioning augmentation `x + strength * noise`; `strength` a float or one value per batch item `[B]`."""
    if isinstance(strength, Tensor):
        strength = strength.view(-1, *[1] * (x.ndim - 1))
    return x + strength * noise


def added_time_ids(
    fps: float,
    motion_bucket_id: float,
    noise_aug_strength: float | Tensor,
    batch: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """SVD micro-conditioning `[B, 3] = [fps, motion_bucket_id, noise_aug_strength]`.

    `fps` is passed to the UNet exactly as given. diffusers' pipeline passes `fps - 1` while the official
    training passes the raw fps; we never subtract, and the default config uses fps 7 for both training and
    inference so that the two always agree. `noise_aug_strength` is a float or a per-sample `[B]` tensor
    (training draws it with `sample_cond_aug`).
    """
    aug = torch.as_tensor(noise_aug_strength, dtype=dtype, device=device).reshape(-1)
    if aug.numel() not in (1, batch):
        raise InputError(f"added_time_ids: noise_aug_strength has {aug.numel()} values for batch {batch}; pass 1 or {batch}")
    ids = torch.empty(batch, 3, dtype=dtype, device=device)
    ids[:, 0] = fps
    ids[:, 1] = motion_bucket_id
    ids[:, 2] = aug.expand(batch)
    return ids


@dataclass
class Conditioning:
    """Everything the UNet sees besides the noisy latent; all tensors share the batch axis B.

    latents: `[B, F, 4, h, w]` VAE latents of the masked frames (concatenated to the noisy latent on C).
    image_embeds: `[B, 1, D]` CLIP image embedding (the single cross-attention token).
    added_time_ids: `[B, 3]` from `added_time_ids`.
    masks: `[B, F, 1, h, w]` latent-resolution masks (1 = hole) for the propagation module, or None.
    flows_fw / flows_bw: `[B, F-1, 2, h, w]` latent-resolution flows (see fffvdi/flow/warp.py), or None.
    """

    latents: Tensor
    image_embeds: Tensor
    added_time_ids: Tensor
    masks: Tensor | None = None
    flows_fw: Tensor | None = None
    flows_bw: Tensor | None = None

    def __post_init__(self) -> None:
        if self.latents.ndim != 5:
            raise InputError(f"Conditioning.latents must be [B, F, C, h, w], got shape {tuple(self.latents.shape)}")
        if self.image_embeds.ndim != 3:
            raise InputError(f"Conditioning.image_embeds must be [B, 1, D], got shape {tuple(self.image_embeds.shape)}")
        if self.added_time_ids.ndim != 2 or self.added_time_ids.shape[1] != 3:
            raise InputError(f"Conditioning.added_time_ids must be [B, 3], got shape {tuple(self.added_time_ids.shape)}")
        b = self.batch_size
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value.shape[0] != b:
                raise InputError(f"Conditioning.{f.name} has batch {value.shape[0]} but latents have batch {b}; make them equal")

    @property
    def batch_size(self) -> int:
        """Number of batch items B."""
        return self.latents.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Conditioning":
        """Copy with every tensor moved to `device` and cast to `dtype` (None keeps each as is)."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Conditioning(**{k: None if v is None else v.to(device=device, dtype=dtype) for k, v in moved.items()})

    def unconditional(self) -> "Conditioning":
        """SVD's CFG negative: zero latents and image embeds; time ids, masks and flows are kept as they are."""
        return replace(self, latents=torch.zeros_like(self.latents), image_embeds=torch.zeros_like(self.image_embeds))

    def drop(self, drop_embeds: Tensor, drop_latents: Tensor) -> "Conditioning":
        """CFG training dropout: zero image embeds where `drop_embeds [B]` and latents where `drop_latents [B]` are True."""
        keep_e = (~drop_embeds.bool()).to(self.image_embeds.dtype).view(-1, 1, 1)
        keep_l = (~drop_latents.bool()).to(self.latents.dtype).view(-1, 1, 1, 1, 1)
        return replace(self, image_embeds=self.image_embeds * keep_e, latents=self.latents * keep_l)

    @staticmethod
    def cat(conds: Sequence["Conditioning"]) -> "Conditioning":
        """Concatenate along the batch axis (e.g. `[uncond, cond]` for one batched CFG call)."""
        out = {}
        for f in fields(Conditioning):
            values = [getattr(c, f.name) for c in conds]
            if all(v is None for v in values):
                out[f.name] = None
            elif any(v is None for v in values):
                raise InputError(f"Conditioning.cat: field {f.name} is None in some inputs only; set it in all or none")
            else:
                out[f.name] = torch.cat(values, dim=0)
        return Conditioning(**out)


def svd_conditioning(
    latents: Tensor,
    image_embeds: Tensor,
    noise_aug_strength: float | Tensor,
    fps: float,
    motion_bucket_id: float,
    masks: Optional[Tensor] = None,
    flows_fw: Optional[Tensor] = None,
    flows_bw: Optional[Tensor] = None,
) -> Conditioning:
    """The UNet's conditioning: `latents [B, F, 4, h, w]` of the (noise-augmented) masked frames, CLIP `image_embeds
    [B, 1, D]`, the time ids telling it `fps`, `motion_bucket_id` and the augmentation strength, and the latent-size
    masks and flows of the propagation module."""
    b = latents.shape[0]
    time_ids = added_time_ids(fps, motion_bucket_id, noise_aug_strength, b, device=latents.device)
    return Conditioning(latents, image_embeds, time_ids, masks, flows_fw, flows_bw)


def cfg_dropout(u: Tensor, p_embeds: float, p_latents: float, p_both: float) -> tuple[Tensor, Tensor]:
    """Exclusive events of one uniform draw `u [B]`: [0, p_both) both, then embeds only, then latents only."""
    both = u < p_both
    embeds_only = (u >= p_both) & (u < p_both + p_embeds)
    latents_only = (u >= p_both + p_embeds) & (u < p_both + p_embeds + p_latents)
    return both | embeds_only, both | latents_only


def drop_for_cfg(cond: Conditioning, generator: torch.Generator, p_embeds: float, p_latents: float,
                 p_both: float) -> Conditioning:
    """Training's CFG dropout: one uniform draw per batch item (`generator`) decides what `cond` loses."""
    u = torch.rand(cond.batch_size, generator=generator, device=cond.latents.device)
    return cond.drop(*cfg_dropout(u, p_embeds, p_latents, p_both))
