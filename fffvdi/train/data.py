"""Training batches: clips from the `data` section (VideoClipDataset), repeated draws (data.epoch_cycle), DIS flows
estimated in the loader workers, and the per-epoch shuffling of a (prepared) loader."""
from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fffvdi.data.youtube_vos import VideoClipDataset
from fffvdi.errors import InputError
from fffvdi.train.flows import FlowClipDataset


def build_clip_dataset(cfg: DictConfig, seed: int, augment: bool = True) -> torch.utils.data.Dataset:
    """VideoClipDataset from the `data` section; augment=False turns flips and time reversal off (validation)."""
    d = cfg.data
    stride = OmegaConf.to_object(d.frame_stride) if OmegaConf.is_config(d.frame_stride) else d.frame_stride  # int | list
    return VideoClipDataset(
        d.root, num_frames=d.num_frames, frame_stride=stride, size=tuple(d.size), hflip_prob=d.hflip if augment else 0.0,
        reverse_prob=d.time_reverse if augment else 0.0, masks=OmegaConf.to_container(d.masks), seed=seed,
        video_list=d.video_list, samples_per_epoch=d.samples_per_epoch, resize=d.resize,
    )


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


def setup_data(cfg: DictConfig, clips: torch.utils.data.Dataset) -> torch.utils.data.DataLoader:
    """Batches of `clips` (+ DIS flows estimated in the workers), shuffled reproducibly per (seed, epoch)."""
    t = cfg.train
    if cfg.data.epoch_cycle:
        clips = EpochCycle(clips, cfg.data.epoch_cycle)
    # With the conditioning cache, flows are estimated only for clips it lacks (in the main process).
    flows_in_workers = cfg.flow.in_workers and cfg.flow.method == "dis" and cfg.data.cache_dir is None
    dataset = FlowClipDataset(clips, cfg.flow.method, cfg.flow.cache_dir) if flows_in_workers else clips
    loader = torch.utils.data.DataLoader(dataset, batch_size=t.batch_size, shuffle=True, drop_last=True,
                                         num_workers=cfg.data.num_workers,
                                         pin_memory=torch.cuda.is_available() and cfg.model.device != "cpu")
    if len(loader) == 0:
        raise InputError(f"data.root={cfg.data.root} gives {len(dataset)} clips, fewer than train.batch_size="
                          f"{t.batch_size}; add videos or lower the batch size")
    return loader


def start_epoch(loader: Any, epoch: int) -> None:
    """Set the epoch of the (prepared) loader's sampler AND of its clip dataset: accelerate's set_epoch skips the
    dataset's when the sampler is sharded over processes, so DDP runs would draw the same clips every epoch."""
    loader.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
