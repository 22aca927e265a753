"""The conditioning cache (`data.cache_dir`): memoises, on disk, each clip draw's noise-free encoding (VAE posteriors
of the clip and of its masked copy, CLIP embeddings, completed latent-size flows and masks; made by
`fffvdi.train.steps.encode_clip`, used with `train.cond_aug_space=latent`), so the VAE, CLIP and flow estimator
run once per clip draw.

Key: a digest of the clip's pixels and masks after augmentation (so a flipped or reversed draw, or new masks,
get their own entry: flipping cached latents would not equal encoding flipped frames, neither VAE nor CLIP is
flip-equivariant) plus every setting the encoding depends on (model, size, flow method/completion, CLIP source,
window starts). Entries are float16 (the VAE's precision in the recipe), written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

FIELDS = ("z_mean", "z_std", "c_mean", "c_std", "embeds", "flows_fw", "flows_bw", "masks")


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

    def memo(self, frames: torch.Tensor, masks: torch.Tensor, video_id: str, device: torch.device,
             encode: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The stored encoding of this clip (see `key`), else `encode()`, stored and returned as stored."""
        key = self.key(frames, masks, video_id)
        enc = self.load(key, device)
        return enc if enc is not None else self.save(key, encode())


def cache_settings(cfg: DictConfig, flow_units: str) -> dict[str, Any]:
    """Everything besides the clip that changes its encoding (part of every cache key); `flow_units` is the UNet
    propagation module's (a checkpoint's saved module may differ from the config's)."""
    t = cfg.train
    return dict(pretrained=cfg.model.pretrained, checkpoint=cfg.model.checkpoint, variant=cfg.model.variant,
                weight_dtype=t.weight_dtype, mixed_precision=t.mixed_precision, flow=cfg.flow.method,
                completion=cfg.flow.completion, raft=cfg.flow.raft_weights, iters=cfg.flow.raft_iters,
                completion_weights=OmegaConf.select(cfg, "flow.completion_weights"), flow_units=flow_units,
                clip_source=t.clip_source, starts=num_starts(cfg), version=1)


def num_starts(cfg: DictConfig) -> int:
    """How many window starts a clip's CLIP embeddings cover."""
    n, f = cfg.train.frames_per_step, cfg.data.num_frames
    return 1 if n is None or n >= f else f - n + 1
