"""Sharing videos out over processes (`accelerate launch --num_processes N scripts/evaluate.py ...` or
`scripts/inference.py --video-list ...`).

Each process owns whole videos: video i of the listing (sorted, or the --video-list order) goes to
process i % N. Every process checks the input before anything is written; a check that fails on
any process fails on all of them with the same one-line error (`agree`), so no process waits at a
barrier for one that has exited. A plain `python scripts/evaluate.py` is one process (PartialState
without a launcher) and takes none of the collective paths.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Optional, Sequence, TypeVar

import torch
from accelerate import PartialState

from fffvdi.errors import FFFVDIError

T = TypeVar("T")
# A process that finished its videos waits at the barrier for the slowest one: with diffusion that can take
# hours longer than torch's default collective timeout (30 min), so the group waits this long instead.
BARRIER_TIMEOUT = timedelta(hours=72)


def process_state():
    """accelerate's PartialState: rank, world size and device of this process (one process when not launched).
    Without CUDA the processes of `accelerate launch --multi_gpu` form a gloo group on the CPU (as in training)."""
    return PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)


def shard(videos: Sequence[T], rank: int, num_processes: int) -> list[T]:
    """The videos process `rank` evaluates: every `num_processes`-th one, starting at `rank`."""
    return list(videos[rank::num_processes])


def all_gather(state, obj: Any) -> list[Any]:
    """`obj` of every process, in rank order (a picklable object; one process: `[obj]`)."""
    if state.num_processes == 1:
        return [obj]
    gathered: list[Any] = [None] * state.num_processes
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def agree(state, error: Optional[FFFVDIError]) -> None:
    """Collective: raise on every process if any process failed (the lowest failing rank's message), else return.

    A process that failed re-raises its own error when its message is the agreed one, so a
    one-process run raises exactly what it caught."""
    if state.num_processes == 1:
        if error is not None:
            raise error
        return
    messages = all_gather(state, None if error is None else str(error))
    failed = [m for m in messages if m is not None]  # in rank order
    if not failed:
        return
    message = failed[0]
    agreed = error if error is not None and str(error) == message else FFFVDIError(message)
    agreed.collective = True  # every process raises it: they may wait for each other before exiting (`finish`)
    raise agreed


def finish(state, error: Optional[FFFVDIError] = None) -> None:
    """End of a run, on every process: wait for the others (after an `error` every process raised, so that the
    launcher, which stops the others when one exits with an error, cuts no process's message), then close the
    process group (a process exiting with the group open may abort in gloo's threads)."""
    if state.num_processes == 1:
        return
    if error is None or getattr(error, "collective", False):
        state.wait_for_everyone()
    state.destroy_process_group()


def rank_device(name: str, state) -> str:
    """The device of this process for a --device / model.device value: with several processes, 'auto' and
    'cuda' mean this process's own device (cuda:<local rank>), so the ranks do not share one GPU."""
    if state.num_processes > 1 and name in ("auto", "cuda"):
        return str(state.device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
