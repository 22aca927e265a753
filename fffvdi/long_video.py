"""Long videos in bounded memory: overlapping windows, anchored first frames, cross-faded overlaps.

Frames are read lazily window by window and handed to the sink as soon as no later window can
change them, so peak memory depends on the window length, not on the video length.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

# process(frames uint8 [n, H, W, 3], masks uint8 [n, H, W], generator) -> uint8 [n, H, W, 3]
WindowFn = Callable[[np.ndarray, np.ndarray, torch.Generator], np.ndarray]
# sink(first_index, frames uint8 [n, H, W, 3]) receives finished frames in order
Sink = Callable[[int, np.ndarray], None]


def plan_windows(total: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """`[start, stop)` windows of `size` covering `total` frames; consecutive ones share >= `overlap` frames.

    The last window is moved back to end at the video's end, so every window is full length
    when the video is long enough (its overlap with the previous one then grows).
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"window size {size} and overlap {overlap}: need size >= 1 and 0 <= overlap < size")
    windows, start = [], 0
    while True:
        stop = min(start + size, total)
        windows.append((start, stop))
        if stop >= total:
            return windows
        start = stop - overlap
        if start + size > total:
            start = max(total - size, 0)


def crossfade_weights(n: int) -> np.ndarray:
    """Weights `[n]` of the newer window over an overlap of n frames, rising from 0 to 1 (both exclusive)."""
    return (np.arange(1, n + 1, dtype=np.float32) / (n + 1)).astype(np.float32)


def run_windows(
    process: WindowFn,
    read_frames: Callable[[int, int], np.ndarray],
    read_masks: Callable[[int, int], np.ndarray],
    total: int,
    sink: Sink,
    size: int,
    overlap: int,
    seed: int = 42,
    progress: bool = True,
) -> None:
    """Inpaint `total` frames window by window, writing finished frames to `sink` in order."""
    windows = plan_windows(total, size, overlap)
    generator = torch.Generator().manual_seed(seed)
    pending: Optional[np.ndarray] = None  # previous window's outputs for frames [start, prev_stop): not final yet
    for k, (start, stop) in enumerate(tqdm(windows, desc="windows", disable=not progress or len(windows) == 1)):
        frames = read_frames(start, stop)
        masks = read_masks(start, stop).astype(np.uint8)
        shared = 0
        if pending is not None:
            shared = len(pending)  # frames of this window the previous one already made
            # Anchor: an I2V model follows its first frame, so start from the previous output, fully known.
            frames = frames.copy()
            masks = masks.copy()
            frames[0] = pending[0]
            masks[0] = 0
        out = process(frames, masks, generator)
        if shared > 0:
            prev = pending.astype(np.float32)  # [shared, H, W, 3]
            w = crossfade_weights(shared)[:, None, None, None]
            mixed = np.rint((1 - w) * prev + w * out[:shared].astype(np.float32)).astype(np.uint8)
            # Pixels outside every mask are the input's in both windows; keep them bit-exact.
            known = masks[:shared, ..., None] == 0
            known[0] = True  # frame 0 is the anchor, identical in both by construction
            out = out.copy()
            out[:shared] = np.where(known, out[:shared], mixed)
        if stop >= total:
            sink(start, out)
            return
        nxt = windows[k + 1][0]
        sink(start, out[: nxt - start])  # no later window touches these
        pending = out[nxt - start :]
