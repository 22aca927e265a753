"""Developer tool: ATen ops dispatched and CPU time of one propagation-module forward (25 frames, 320 channels,
16x32 latent, no grad, 1 thread). `python scripts/dev/count_module_ops.py [REPO]` measures the fffvdi found in
REPO (default: this one), so an older commit checked out with `git worktree add` can be measured beside it."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import fffvdi  # noqa: E402
from fffvdi.models.propagation import build_propagation  # noqa: E402


class OpCount(TorchDispatchMode):
    """Counts every ATen op dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    b, f, c, h, w = 1, 25, 320, 16, 32
    x, masks = torch.randn(b, f, c, h, w), torch.rand(b, f, 1, h, w).round()
    fw, bw = torch.randn(b, f - 1, 2, h, w), torch.randn(b, f - 1, 2, h, w)
    print(f"fffvdi from {Path(fffvdi.__file__).parent}")
    for arch in ("light", "official"):
        module = build_propagation(c, arch).eval()
        with torch.no_grad():
            module(x, masks, fw, bw)  # warm-up
            with OpCount() as count:
                module(x, masks, fw, bw)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                module(x, masks, fw, bw)
                times.append(time.perf_counter() - t0)
        print(f"{arch}: {count.n} ops, {statistics.median(times):.2f} s (median of 3)")


if __name__ == "__main__":
    main()
