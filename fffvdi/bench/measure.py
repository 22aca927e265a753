"""Benchmark measurements: median timings after warm-up, peak memory (RSS, CUDA), the machine and versions, a
JSON report (model presets and inputs: `fffvdi.bench.presets`)."""
from __future__ import annotations

import importlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode


MB = 1024.0**2


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings measure the kernels, not their launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per run: median and min over the timed runs (warm-up runs excluded)."""

    runs_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        """Median over the timed runs."""
        return statistics.median(self.runs_s)

    @property
    def min_s(self) -> float:
        """Fastest timed run (least disturbed by other processes)."""
        return min(self.runs_s)


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1, device: torch.device = torch.device("cpu")
) -> dict[str, Timing]:
    """Time each callable `repeats` times after `warmup` calls, in turns, so background load hits all alike."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    out = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            out[name].runs_s.append(time.perf_counter() - start)
    return out


def time_fn(
    fn: Callable[[], object], repeats: int = 3, warmup: int = 1, device: torch.device = torch.device("cpu")
) -> Timing:
    """Median-of-`repeats` timing of one callable after `warmup` calls."""
    return time_interleaved({"fn": fn}, repeats, warmup, device)["fn"]


# Ops whose result the host must wait for: a tensor's value read into Python (.item(), bool(), float(), every
# scalar conversion goes through _local_scalar_dense) or an output whose size depends on the values.
SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_consecutive", "unique_dim")
COPY_OUT = ("tolist", "numpy", "cpu")  # Tensor methods that hand values to the host; on a CPU tensor no op runs


class HostSyncCounter(TorchDispatchMode):
    """Counts host-device syncs of the code run inside `with HostSyncCounter() as c:`; `c.calls` names them.

    Device-independent, so a CPU test sees the `.item()`, `bool(tensor)`, `.tolist()`, boolean indexing or
    `.cpu()` that would stall a GPU's queue: `SYNC_OPS` at the dispatcher, `COPY_OUT` methods patched meanwhile.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._saved: dict[str, Callable] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        indices = args[1] if name == "index" and len(args) > 1 else ()
        bool_index = any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
        if name in SYNC_OPS or bool_index:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name in COPY_OUT:
            self._saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._counting(name, self._saved[name]))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, method)
        self._saved.clear()
        return super().__exit__(*exc)

    def _counting(self, name: str, method: Callable) -> Callable:
        """`method` that records its call first."""
        def counted(tensor, *args, **kwargs):
            self.calls.append(f"Tensor.{name}")
            return method(tensor, *args, **kwargs)
        return counted

    @property
    def count(self) -> int:
        """Number of syncs seen."""
        return len(self.calls)


def process_peak_rss_mb() -> float:
    """Peak resident memory of this process since it started (getrusage; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024.0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0, /proc/self/clear_refs); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return peak_rss_since_reset_mb() is not None
    except OSError:
        return False


def peak_rss_since_reset_mb() -> Optional[float]:
    """VmHWM of /proc/self/status (peak RSS since start or the last `reset_peak_rss`), None where absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError):
        pass
    return None


def current_rss_mb() -> float:
    """Resident memory now (psutil when installed, else /proc; 0 when neither is available)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / MB
    except ImportError:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE") / MB
        except (OSError, ValueError):
            return 0.0


class RSSSampler:
    """Context manager sampling this process's RSS in a thread; `.peak_mb` is the largest value seen inside."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, current_rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "RSSSampler":
        self.peak_mb = current_rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())


class Report:
    """Measurements by section: each a value with its unit and optional details."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, dict]] = {}

    def add(self, section: str, name: str, value: float | None, unit: str, **detail) -> None:
        """Record one measurement (4 significant digits); None values are skipped."""
        if value is None:  # e.g. GPU memory on a CPU run
            return
        if isinstance(value, float):
            value = float(f"{value:.4g}")
        self.results.setdefault(section, {})[name] = dict(value=value, unit=unit, **detail)

    def timing(self, section: str, name: str, t: Timing, per: int = 1, unit: str = "ms", **detail) -> float:
        """Add a timing in ms divided by `per` (e.g. frames); returns the median in that unit."""
        scale = 1000.0 / per
        value = t.median_s * scale
        self.add(section, name, value, unit, min=float(f"{t.min_s * scale:.4g}"), runs=len(t.runs_s), **detail)
        return value

    def table(self) -> str:
        """All measurements as a markdown table."""
        lines = ["| section | measurement | value | unit | details |", "|---|---|---|---|---|"]
        for section, rows in self.results.items():
            for name, row in rows.items():
                extra = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("value", "unit"))
                lines.append(f"| {section} | {name} | {row['value']} | {row['unit']} | {extra} |")
        return "\n".join(lines)


def cuda_peak_mb(device: torch.device) -> Optional[float]:
    """torch.cuda.max_memory_allocated since the last reset, in MiB; None on CPU."""
    return torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else None


def reset_cuda_peak(device: torch.device) -> None:
    """Start a new peak-memory window on the GPU (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, falling back to platform."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, RAM, torch threads, OS and (on cuda) GPU name and memory."""
    info = dict(cpu=_cpu_model(), logical_cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                os=platform.platform())
    try:
        import psutil

        ram_gb = round(psutil.virtual_memory().total / 1024**3, 1)
        info.update(physical_cores=psutil.cpu_count(logical=False), ram_gb=ram_gb)
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1024**3, 1), cuda=torch.version.cuda)
    return info


def versions() -> dict:
    """Versions of python and the packages that set the numbers (module __version__, e.g. torch's +cu tag)."""
    out = {"python": platform.python_version()}
    for name, module in (("torch", "torch"), ("torchvision", "torchvision"), ("diffusers", "diffusers"),
                         ("transformers", "transformers"), ("opencv", "cv2"), ("numpy", "numpy"), ("fffvdi", "fffvdi")):
        try:
            out[name] = getattr(importlib.import_module(module), "__version__", None)
        except ImportError:
            out[name] = None
    return out


def git_info(repo: str | Path) -> dict:
    """Commit of `repo` and whether tracked files differ from it (read-only: no index lock is taken)."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")

    def git(*args: str) -> Optional[str]:
        try:
            res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return dict(commit=git("rev-parse", "HEAD"), dirty=None if status is None else bool(status))
