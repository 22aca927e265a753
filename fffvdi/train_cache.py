"""Training conditioning from noise-free encodings, optionally cached on disk (`data.cache_dir`).

`train.cond_aug_space=latent` splits a batch's conditioning in two: a deterministic encoding of each clip (VAE
posteriors of the clip and of its masked copy, CLIP embeddings, completed latent-size flows and masks), then
the random draws of one step (target latent sample, sigma_c noise on the masked-clip latents, CFG dropout).
The encoding is what the cache stores, so with a cache the VAE, CLIP and flow estimator run once per clip draw.

Key: a digest of the clip's pixels and masks after augmentation (so a flipped or reversed draw, or new masks,
get their own entry: flipping cached latents would not equal encoding flipped frames, neither VAE nor CLIP is
flip-equivariant) plus every setting the encoding depends on (model, size, flow method/completion, CLIP source,
window starts). Entries are float16 (the VAE's precision in the recipe), written atomically.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from omegaconf import DictConfig

from fffvdi.conditioning import Conditioner, clip_source_image
from fffvdi.edm import Conditioning, added_time_ids, sample_cond_aug

FIELDS = ("z_mean", "z_std", "c_mean", "c_std", "embeds", "flows_fw", "flows_bw", "masks")


def offloader(device: torch.device) -> Callable[[torch.nn.Module], Any]:
    """`on_device` for a Conditioner: the frozen module visits `device` for one use and returns to the CPU."""

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


def window_start(num_frames: int, window: Optional[int], generator: torch.Generator) -> int:
    """First frame of this step's `window` frames (drawn with the step generator); 0 without a window."""
    if window is None or window >= num_frames:
        return 0
    return int(torch.randint(0, num_frames - window + 1, (1,), generator=generator, device=generator.device).item())


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


def draw_conditioning(enc: dict[str, torch.Tensor], t: DictConfig, scaling: float, start: int, window: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
    """Target latents z0 and CFG-dropped conditioning of `window` frames from `start`, drawn from an encoding: the
    latent-space counterpart of fffvdi.training.encode_batch (sigma_c noise added to the masked-clip latents)."""
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
    cond = cond + sigma_c.view(-1, 1, 1, 1, 1) * randn(cond)
    embeds = enc["embeds"][:, start:start + 1]  # [B, 1, D]: the CLIP embedding of the window's first frame
    time_ids = added_time_ids(t.fps, t.motion_bucket_id, sigma_c, b, device=dev)
    out = Conditioning(cond, embeds, time_ids, enc["masks"][:, frames], enc["flows_fw"][:, pairs],
                       enc["flows_bw"][:, pairs])
    from fffvdi.training import cfg_dropout

    drop_e, drop_l = cfg_dropout(torch.rand(b, generator=generator, device=dev), t.drop_image_embeds,
                                 t.drop_cond_latents, t.drop_both)
    return z0, out.drop(drop_e, drop_l)


class ConditioningCache:
    """Per-clip encodings on disk under `root`, keyed by the clip's pixels + masks and `settings`."""

    def __init__(self, root: str | Path, settings: dict[str, Any]) -> None:
        self.root = Path(root)
        self.salt = json.dumps(settings, sort_keys=True, default=str).encode()
        self.hits = self.misses = 0

    def key(self, frames: torch.Tensor, masks: torch.Tensor, video_id: str) -> str:
        """File stem of one clip `frames [F, 3, H, W]` in [-1, 1], `masks [F, 1, H, W]`."""
        pixels = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        digest = hashlib.sha1(self.salt)
        digest.update(pixels.tobytes())
        digest.update((masks > 0.5).cpu().numpy().tobytes())
        return f"{video_id}-{digest.hexdigest()[:20]}"

    def load(self, key: str, device: torch.device) -> Optional[dict[str, torch.Tensor]]:
        """The stored encoding (float32 on `device`, batch axis of 1), or None."""
        path = self.root / f"{key}.pt"
        if not path.is_file():
            return None
        saved = torch.load(path, map_location=device, weights_only=True)
        self.hits += 1
        return {k: saved[k].float()[None] for k in FIELDS}

    def save(self, key: str, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Store one clip's encoding (batch axis of 1); returns it as stored (float16-rounded, float32)."""
        self.misses += 1
        half = {k: enc[k][0].to(torch.float16).cpu() for k in FIELDS}
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{key}.pt"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(half, tmp)
        os.replace(tmp, path)  # atomic: concurrent processes never read half-written files
        return {k: v.float()[None].to(enc[k].device) for k, v in half.items()}


def cache_settings(cfg: DictConfig) -> dict[str, Any]:
    """Everything besides the clip that changes its encoding (part of every cache key)."""
    t = cfg.train
    return dict(pretrained=cfg.model.pretrained, checkpoint=cfg.model.checkpoint, variant=cfg.model.variant,
                weight_dtype=t.weight_dtype, mixed_precision=t.mixed_precision, flow=cfg.flow.method,
                completion=cfg.flow.completion, raft=cfg.flow.raft_weights, iters=cfg.flow.raft_iters,
                clip_source=t.clip_source, starts=num_starts(cfg), version=1)


def num_starts(cfg: DictConfig) -> int:
    """How many window starts a clip's CLIP embeddings cover."""
    n, f = cfg.train.frames_per_step, cfg.data.num_frames
    return 1 if n is None or n >= f else f - n + 1


def encode_batch_latent(conditioner: Conditioner, batch: dict, cfg: DictConfig, cache: Optional[ConditioningCache],
                        flows: Callable[[int], tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A batch's encoding, clip by clip: from `cache` when it holds the clip, else encoded (and stored).
    `flows(i)` gives clip i's raw pixel flows `[F-1, 2, H, W]` (fw, bw); it is only called on a miss."""
    dev = conditioner.device
    parts = []
    for i, vid in enumerate(batch["video_id"]):
        frames, masks = batch["frames"][i:i + 1], batch["masks"][i:i + 1]
        key = cache.key(frames[0], masks[0], vid) if cache is not None else None
        enc = cache.load(key, dev) if cache is not None else None
        if enc is None:
            fw, bw = flows(i)
            enc = encode_clip(conditioner, frames.to(dev), masks.to(dev), fw[None].to(dev), bw[None].to(dev),
                              cfg.train.clip_source, num_starts(cfg))
            if cache is not None:
                enc = cache.save(key, enc)
        parts.append(enc)
    return {k: torch.cat([p[k] for p in parts]) for k in FIELDS}


class EpochCycle(torch.utils.data.Dataset):
    """A clip dataset whose epoch e draws what epoch e % cycle drew (data.epoch_cycle), so draws repeat."""

    def __init__(self, clips: torch.utils.data.Dataset, cycle: int) -> None:
        self.clips, self.cycle = clips, int(cycle)

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        """Forward `epoch % cycle` to the wrapped dataset."""
        self.clips.set_epoch(int(epoch) % self.cycle)

    def __getitem__(self, index: int) -> dict:
        return self.clips[index]
