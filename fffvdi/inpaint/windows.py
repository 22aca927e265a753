"""Long videos in bounded memory: overlapping windows, anchored first frames, cross-faded overlaps.

Frames are read lazily window by window and handed to the sink as soon as no later window can
change them, so peak memory depends on the window length, not on the video length. After each
window a `WindowState` (the next window, the overlap frames not final yet, the random generator's
state) can be saved; resuming from it gives the same frames as a run that never stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

# process(frames uint8 [n, H, W, 3], masks uint8 [n, H, W], generator) -> uint8 [n, H, W, 3]
WindowFn = Callable[[np.ndarray, np.ndarray, torch.Generator], np.ndarray]
# sink(first_index, frames uint8 [n, H, W, 3]) receives finished frames in order
Sink = Callable[[int, np.ndarray], None]


@dataclass
class WindowState:
    """Where `run_windows` stands between two windows: all it needs to go on as if it had never stopped."""

    next_window: int  # index, in plan_windows order, of the window to run next
    done: int  # frames [0, done) went to the sink
    pending: np.ndarray  # uint8 [n, H, W, 3]: the last window's outputs for frames [done, done + n), not final
    generator: torch.Tensor  # torch.Generator.get_state() after the last window


# checkpoint(state) is called after the frames before `state.done` went to the sink
Checkpoint = Callable[[WindowState], None]


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
    resume: Optional[WindowState] = None,
    checkpoint: Optional[Checkpoint] = None,
) -> None:
    """Inpaint `total` frames window by window, writing finished frames to `sink` in order.

    `checkpoint(state)` hears the state after every window but the last; `resume` starts from such a state.
    """
    windows = plan_windows(total, size, overlap)
    generator = torch.Generator().manual_seed(seed)
    first, pending = 0, None  # pending: previous window's outputs for frames [start, prev_stop), not final yet
    if resume is not None:
        if not 0 < resume.next_window < len(windows) or windows[resume.next_window][0] != resume.done:
            raise ValueError(f"resume state (window {resume.next_window}, frame {resume.done}) does not fit the plan")
        first, pending = resume.next_window, resume.pending
        generator.set_state(resume.generator)
    bar = tqdm(total=len(windows), initial=first, desc="windows", disable=not progress or len(windows) == 1)
    try:  # the bar ends its line however the loop ends, so an error message starts on its own
        for k in range(first, len(windows)):
            start, stop = windows[k]
            frames = read_frames(start, stop)
            masks = read_masks(start, stop).astype(np.uint8)
            shared = 0 if pending is None else len(pending)  # frames of this window the previous one already made
            if shared > 0:
                # Anchor: an I2V model follows its first frame, so start from the previous output, fully known.
                frames = frames.copy()
                masks = masks.copy()
                frames[0] = pending[0]
                masks[0] = 0
            out = process(frames, masks, generator)
            if shared > 0:
                out = out.copy()
                weights = crossfade_weights(shared)
                # Frame 0 is the anchor, identical in both windows by construction; pixels outside every mask
                # are the input's in both, kept bit-exact. Only masked pixels are mixed (float32 of the hole
                # alone: a full 4K frame in float32 is 100 MB).
                for i in range(1, shared):
                    hole = masks[i] > 0  # [H, W]
                    prev, new = pending[i][hole].astype(np.float32), out[i][hole].astype(np.float32)  # [n, 3]
                    out[i][hole] = np.rint((1 - weights[i]) * prev + weights[i] * new).astype(np.uint8)
            bar.update(1)
            if stop >= total:
                sink(start, out)
                return
            nxt = windows[k + 1][0]
            sink(start, out[: nxt - start])  # no later window touches these
            pending = out[nxt - start :]
            if checkpoint is not None:
                checkpoint(WindowState(k + 1, nxt, pending, generator.get_state()))
    finally:
        bar.close()
