"""Benchmark helpers: median timings after warm-up, peak memory, machine/versions, model presets, synthetic video."""
from __future__ import annotations

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

import numpy as np
import torch

# SVD-XT's published component configs (stabilityai/stable-video-diffusion-img2vid-xt{,-1-1}); written out
# rather than taken from library defaults, which differ for the VAE (diffusers' default is a 1-level toy).
SVDXT_UNET_CONFIG = dict(
    sample_size=96, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
    num_attention_heads=(5, 10, 20, 20), addition_time_embed_dim=256, projection_class_embeddings_input_dim=768,
    transformer_layers_per_block=1, num_frames=25,
)
SVDXT_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=768,
    scaling_factor=0.18215, force_upcast=True,
)
# OpenCLIP ViT-H/14 as transformers' CLIPVisionModelWithProjection (SVD's image_encoder/config.json).
SVDXT_CLIP_CONFIG = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=1024, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-5,
)
PRESETS = ("tiny", "svd-xt")
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
    import importlib

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


def build_components(
    preset: str, device: torch.device, dtype: torch.dtype,
    parts: tuple[str, ...] = ("unet", "vae", "image_encoder"), seed: int = 0,
):
    """In-memory `SVDComponents` of a preset with random weights; parts not listed are None (saves time and RAM)."""
    from fffvdi.models.loading import SVDComponents
    from fffvdi.models.tiny import build_tiny_components
    from fffvdi.models.unet import FFFVDIUNet

    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is unknown; use one of {PRESETS}")
    with torch.device(device):  # initialise on the target device: fast on GPU, and no CPU copy of a 6 GB UNet
        tiny = build_tiny_components(seed)  # also supplies the feature extractor and SVD's scheduler config
        comps = _build_parts(preset, parts, tiny, seed)
    if comps["unet"] is not None:
        torch.manual_seed(seed + 3)
        comps["unet"] = FFFVDIUNet(comps["unet"])
    for module in comps.values():
        if module is not None:
            module.to(device).eval().requires_grad_(False)
            if dtype != torch.float32:  # cast only when asked: diffusers warns on every dtype cast
                module.to(dtype)
    return SVDComponents(feature_extractor=tiny["feature_extractor"], scheduler=tiny["scheduler"], **comps)


def _build_parts(preset: str, parts: tuple[str, ...], tiny: dict, seed: int) -> dict:
    """The requested UNet / VAE / image encoder of a preset (others None), random weights."""
    comps = dict(unet=None, vae=None, image_encoder=None)
    if preset == "tiny":
        comps.update({k: tiny[k] for k in parts})
    else:
        from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        torch.manual_seed(seed)
        makers = dict(
            unet=lambda: UNetSpatioTemporalConditionModel(**SVDXT_UNET_CONFIG),
            vae=lambda: AutoencoderKLTemporalDecoder(**SVDXT_VAE_CONFIG),
            image_encoder=lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**SVDXT_CLIP_CONFIG)),
        )
        comps.update({k: makers[k]() for k in parts})
    return comps


def count_params_m(module: torch.nn.Module) -> float:
    """Parameter count in millions."""
    return sum(p.numel() for p in module.parameters()) / 1e6


class SyntheticVideo:
    """A video made on demand: a panning texture and a moving rectangle mask; no frame is stored.

    `read_frames(start, stop)` and `read_masks(start, stop)` fit `fffvdi.long_video.run_windows`, so
    a 200-frame video costs the memory of one window.
    """

    def __init__(self, num_frames: int, height: int, width: int, seed: int = 0, mask_fraction: float = 1 / 16) -> None:
        from fffvdi.data.synthetic import smooth_texture

        self.num_frames, self.height, self.width = num_frames, height, width
        self.mask_side = mask_fraction**0.5  # the rectangle's side as a fraction of the frame's
        self.texture = smooth_texture(height, width, np.random.default_rng(seed))  # one frame of memory

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """uint8 `[n, H, W, 3]`: the texture shifted 2 px right and 1 px down per frame."""
        return np.stack([np.roll(self.texture, (t, 2 * t), axis=(0, 1)) for t in range(start, stop)])

    def read_masks(self, start: int, stop: int) -> np.ndarray:
        """uint8 `[n, H, W]`: a rectangle (`mask_fraction` of the area; default a quarter of each side) bouncing
        horizontally at 3 px/frame."""
        h, w = self.height, self.width
        mh, mw = max(int(round(h * self.mask_side)), 1), max(int(round(w * self.mask_side)), 1)
        span = max(w - mw, 1)
        out = np.zeros((stop - start, h, w), np.uint8)
        for i, t in enumerate(range(start, stop)):
            x = (3 * t) % (2 * span)
            x = x if x < span else 2 * span - x  # bounce off the right border
            out[i, (h - mh) // 2 : (h - mh) // 2 + mh, x : x + mw] = 1
        return out
