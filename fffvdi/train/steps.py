"""One training step: a batch becomes target latents and conditioning (`condition_batch`), then the EDM loss, its
backward pass and the (accumulated) optimizer step (`train_step`).

`train.cond_aug_space` picks where SVD's conditioning noise goes. pixel (SVD, official): on the masked frames before
the VAE, so the window's frames are encoded every step (`encode_batch`). latent: on the VAE latents of a noise-free
encoding of the whole clip (`encode_clip`: posteriors, CLIP embeddings, completed flows), which the conditioning
cache (`fffvdi.train.cache`) memoises, then the step's random draws are made on it (`draw_conditioning`). Both end
in the same micro-conditioning (`fffvdi.diffusion.conditioning`) as the inference pipeline. Every random draw comes
from the step's generator (`step_generator`), so a resumed run repeats an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from fffvdi.diffusion.conditioning import Conditioning, drop_for_cfg, noise_augment, svd_conditioning
from fffvdi.diffusion.edm import EDMDenoiser, sample_cond_aug
from fffvdi.inpaint.conditioner import Conditioner, clip_source_image
from fffvdi.train.cache import FIELDS, ConditioningCache, num_starts
from fffvdi.train.flows import batch_flows, item_flows

COND_AUG_SPACES = ("pixel", "latent")  # train.cond_aug_space: where the conditioning noise goes (see above)
COND_LATENTS = ("mode", "sample")  # train.cond_latents: the VAE posterior's mode (= inference) or a sample (official)


def step_generator(seed: int, micro_step: int, rank: int, device: torch.device, processes: int = 1) -> torch.Generator:
    """RNG of one batch: a function of its global index `micro_step * processes + rank`, so a resumed run draws the
    noise of an uninterrupted one, and N processes draw what one process accumulating N micro-steps would."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + (micro_step * processes + rank) * 1_009)


def window_start(num_frames: int, window: Optional[int], generator: torch.Generator) -> int:
    """First frame of this step's `window` frames (drawn with the step generator); 0 without a window."""
    if window is None or window >= num_frames:
        return 0
    return int(torch.randint(0, num_frames - window + 1, (1,), generator=generator, device=generator.device).item())


def encode_batch(conditioner: Conditioner, frames: torch.Tensor, masks: torch.Tensor, flows_fw: torch.Tensor,
                 flows_bw: torch.Tensor, t: DictConfig, generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
    """Pixel space: clean latents z0 and the (CFG-dropped) conditioning of frames `[B, F, 3, H, W]` in [-1, 1] with
    masks `[B, F, 1, H, W]` (1 = hole) and raw pixel flows `[B, F-1, 2, H, W]`, by the `Conditioner` inference uses."""
    b, dev = frames.shape[0], frames.device
    flows_fw, flows_bw, flows_fw_l, flows_bw_l, masks_l = conditioner.complete_flows(flows_fw, flows_bw, masks)
    z0 = conditioner.encode_targets(frames, generator)
    # Conditioning augmentation: pixel noise of strength sigma_c on the masked frames, told to the UNet as a time id.
    sigma_c = sample_cond_aug(b, t.cond_aug_mean, t.cond_aug_std, generator=generator, device=dev)  # [B]
    masked = frames * (1 - masks)
    noise = torch.randn(masked.shape, generator=generator, device=dev, dtype=masked.dtype)
    draw = generator if t.cond_latents == "sample" else None  # official: a posterior sample; ours: its mode
    cond_latents = conditioner.encode(noise_augment(masked, sigma_c, noise), draw)  # unscaled
    embeds = conditioner.clip_embed(clip_source_image(t.clip_source, frames, masks, flows_fw, flows_bw))  # [B, 1, D]
    cond = svd_conditioning(cond_latents, embeds, sigma_c, t.fps, t.motion_bucket_id, masks_l, flows_fw_l, flows_bw_l)
    return z0, drop_for_cfg(cond, generator, t.drop_image_embeds, t.drop_cond_latents, t.drop_both)


@torch.no_grad()
def posterior(conditioner: Conditioner, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std `[B, F, 4, h, w]` (unscaled) of the VAE posterior of `pixels [B, F, 3, H, W]`, chunked."""
    both = conditioner.encode_with(pixels, lambda d: torch.cat([d.mean, d.std], dim=1))  # [B, F, 2 * 4, h, w]
    return both.chunk(2, dim=2)


@torch.no_grad()
def encode_clip(conditioner: Conditioner, frames: torch.Tensor, masks: torch.Tensor, flows_fw: torch.Tensor,
                flows_bw: torch.Tensor, clip_source: str, starts: int) -> dict[str, torch.Tensor]:
    """The noise-free encoding of clips `frames [B, F, 3, H, W]`, `masks [B, F, 1, H, W]`, raw pixel flows
    `[B, F-1, 2, H, W]`: posteriors, CLIP embeddings `[B, starts, D]` (of each window start's first frame) and
    completed latent-size flows and masks."""
    fw, bw, fw_l, bw_l, masks_l = conditioner.complete_flows(flows_fw, flows_bw, masks)
    z_mean, z_std = posterior(conditioner, frames)
    c_mean, c_std = posterior(conditioner, frames * (1 - masks))
    embeds = torch.cat([conditioner.clip_embed(clip_source_image(clip_source, frames[:, s:], masks[:, s:], fw[:, s:],
                                                                 bw[:, s:])) for s in range(starts)], dim=1)
    return dict(z_mean=z_mean, z_std=z_std, c_mean=c_mean, c_std=c_std, embeds=embeds, flows_fw=fw_l, flows_bw=bw_l,
                masks=masks_l)


def encode_clips(conditioner: Conditioner, batch: dict, cfg: DictConfig,
                 cache: Optional[ConditioningCache]) -> dict[str, torch.Tensor]:
    """Latent space: a batch's noise-free encoding (`encode_clip`), clip by clip, each read from `cache` when it
    holds it (its raw pixel flows are then never needed)."""
    dev, parts = conditioner.device, []
    for i, vid in enumerate(batch["video_id"]):
        frames, masks = batch["frames"][i:i + 1], batch["masks"][i:i + 1]

        def encode() -> dict[str, torch.Tensor]:  # called (if at all) in this iteration
            fw, bw = item_flows(batch, i, conditioner.flow_fn, cfg.flow.cache_dir)
            return encode_clip(conditioner, frames.to(dev), masks.to(dev), fw[None].to(dev), bw[None].to(dev),
                               cfg.train.clip_source, num_starts(cfg))

        parts.append(encode() if cache is None else cache.memo(frames[0], masks[0], vid, dev, encode))
    return {k: torch.cat([p[k] for p in parts]) for k in FIELDS}


def draw_conditioning(enc: dict[str, torch.Tensor], t: DictConfig, scaling: float, start: int, window: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
    """Latent space: target latents z0 and CFG-dropped conditioning of `window` frames from `start`, drawn from an
    encoding (sigma_c noise added to the masked-clip latents): `encode_batch`'s counterpart."""
    frames = slice(start, start + window)
    pairs = slice(start, start + window - 1)
    z_mean, z_std = enc["z_mean"][:, frames], enc["z_std"][:, frames]  # [B, n, 4, h, w]
    b, dev = z_mean.shape[0], z_mean.device
    randn = lambda x: torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)  # noqa: E731
    z0 = (z_mean + z_std * randn(z_mean)) * scaling  # a posterior sample, scaled: the training target
    sigma_c = sample_cond_aug(b, t.cond_aug_mean, t.cond_aug_std, generator=generator, device=dev)  # [B]
    cond = enc["c_mean"][:, frames]
    if t.cond_latents == "sample":
        cond = cond + enc["c_std"][:, frames] * randn(cond)
    cond = noise_augment(cond, sigma_c, randn(cond))
    embeds = enc["embeds"][:, start:start + 1]  # [B, 1, D]: the CLIP embedding of the window's first frame
    out = svd_conditioning(cond, embeds, sigma_c, t.fps, t.motion_bucket_id, enc["masks"][:, frames],
                           enc["flows_fw"][:, pairs], enc["flows_bw"][:, pairs])
    return z0, drop_for_cfg(out, generator, t.drop_image_embeds, t.drop_cond_latents, t.drop_both)


def condition_batch(conditioner: Conditioner, batch: dict, cfg: DictConfig, generator: torch.Generator,
                    cache: Optional[ConditioningCache] = None) -> tuple[torch.Tensor, Conditioning]:
    """Target latents z0 `[B, n, 4, h, w]` and CFG-dropped conditioning of one batch, on a window of n =
    `train.frames_per_step` frames (all when unset) drawn here, in `train.cond_aug_space` (see the module doc)."""
    t = cfg.train
    clip_len = batch["frames"].shape[1]
    n = min(t.frames_per_step or clip_len, clip_len)
    start = window_start(clip_len, t.frames_per_step, generator)  # this step's frame window [start, start + n)
    if t.cond_aug_space == "latent":  # encode the whole clip (or read it from the cache), then draw the window
        enc = encode_clips(conditioner, batch, cfg, cache)
        return draw_conditioning(enc, t, conditioner.c.vae.config.scaling_factor, start, n, generator)
    # pixel noise before the VAE: encode only the window's frames (flows of the whole clip [B, F-1, ...], sliced)
    flows_fw, flows_bw = batch_flows(batch, conditioner.flow_fn, cfg.flow.cache_dir)
    frames, pairs = slice(start, start + n), slice(start, start + n - 1)
    dev = conditioner.device
    return encode_batch(conditioner, batch["frames"][:, frames], batch["masks"][:, frames], flows_fw[:, pairs].to(dev),
                        flows_bw[:, pairs].to(dev), t, generator)


def train_step(accelerator: Any, denoiser: EDMDenoiser, z0: torch.Tensor, cond: Conditioning,
               params: list[torch.nn.Parameter], optimizer: Any, lr_scheduler: Any, cfg: DictConfig,
               generator: torch.Generator) -> tuple[float, dict[str, float], Any]:
    """EDM loss, backward, clipping and the (accumulated) optimizer step for one batch; call inside
    `accelerator.accumulate(unet)`. Returns `(loss, {mse_hole, mse_known}, grad_norm or None)`."""
    if denoiser.net_dtype not in (None, torch.float32):  # DeepSpeed fp16/bf16: no autocast, propagation inputs must match
        cond = cond.to(dtype=denoiser.net_dtype)
    loss, logs = denoiser.loss(z0, cond, generator=generator, mask_weight=cfg.train.mask_weight)
    accelerator.backward(loss)
    grad_norm = None
    if accelerator.sync_gradients:
        max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else math.inf
        grad_norm = accelerator.clip_grad_norm_(params, max_norm)  # None under DeepSpeed
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    names = [k for k in ("mse_hole", "mse_known") if k in logs]
    values = torch.stack([loss.detach(), *(logs[k] for k in names)]).tolist()  # one device sync for all three
    return values[0], dict(zip(names, values[1:])), grad_norm
