"""Optical flows of training clips: cache keys, the on-disk flow cache, per-batch flows, and a dataset wrapper
that estimates DIS flows in the dataloader workers."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from fffvdi.flow.estimators import build_flow_estimator


def flow_cache_key(frames: torch.Tensor, video_id: str, start: int, stride: int) -> str:
    """File stem for a clip: id, start, stride, shape and a digest of its first and last frame (covers flip/reverse)."""
    ends = ((frames[[0, -1]].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    digest = hashlib.sha1(ends.tobytes()).hexdigest()[:12]
    f, _, h, w = frames.shape
    return f"{video_id}-s{int(start)}-k{int(stride)}-f{f}-{h}x{w}-{digest}"


def clip_flows(frames: torch.Tensor, key: str, estimator: Any, cache_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw pixel flows `[F-1, 2, H, W]` (fw, bw) of one clip `frames [F, 3, H, W]` in [-1, 1], via the cache if set."""
    path = Path(cache_dir) / f"{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        saved = torch.load(path, map_location=frames.device, weights_only=True)
        return saved["fw"].float(), saved["bw"].float()
    fw, bw = estimator((frames[None] + 1) / 2)  # estimators take [B, F, 3, H, W] in [0, 1]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"fw": fw[0].half().cpu(), "bw": bw[0].half().cpu()}, tmp)  # half: 1/2 the disk, < 0.05 px error
        os.replace(tmp, path)  # atomic: concurrent workers never read half-written files
    return fw[0], bw[0]


def batch_flows(batch: dict, estimator: Any, cache_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, F-1, 2, H, W]` flows for a collated batch; those the dataloader workers computed are used as they are."""
    if "flows_fw" in batch:
        return batch["flows_fw"], batch["flows_bw"]
    pairs = [item_flows(batch, i, estimator, cache_dir) for i in range(len(batch["video_id"]))]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def item_flows(batch: dict, i: int, estimator: Any, cache_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw pixel flows `[F-1, 2, H, W]` of clip i of a batch: the workers' if given, else estimated (flow cache)."""
    if "flows_fw" in batch:
        return batch["flows_fw"][i], batch["flows_bw"][i]
    frames = batch["frames"][i]
    key = flow_cache_key(frames, batch["video_id"][i], batch["start"][i], batch["stride"][i])
    return clip_flows(frames, key, estimator, cache_dir)


class FlowClipDataset(torch.utils.data.Dataset):
    """Adds raw pixel flows (`flows_fw`, `flows_bw` `[F-1, 2, H, W]`) to every clip, so workers estimate them."""

    def __init__(self, clips: torch.utils.data.Dataset, method: str, cache_dir: str | None) -> None:
        self.clips, self.method, self.cache_dir = clips, method, cache_dir
        self._estimator = None  # built lazily inside each worker process

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the clip dataset (new clips each epoch, reproducibly)."""
        self.clips.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.clips[index])
        if self._estimator is None:
            self._estimator = build_flow_estimator(self.method)
        key = flow_cache_key(item["frames"], item["video_id"], item["start"], item["stride"])
        item["flows_fw"], item["flows_bw"] = clip_flows(item["frames"], key, self._estimator, self.cache_dir)
        return item
