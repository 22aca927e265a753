"""Inference configuration schema (configs/inference.yaml overrides these defaults)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from fffvdi.config import SHARED_CHOICES, FlowConfig, MaskConfig, ModelConfig
from fffvdi.recipe import SIGMA_MAX, SIGMA_MIN


@dataclass
class SamplingConfig:
    """EDM sampling and SVD micro-conditioning."""

    num_steps: int = 25  # Euler steps on Karras sigmas
    sigma_min: float = SIGMA_MIN  # smallest noise level of the schedule (SVD's scheduler value, fffvdi/recipe.py)
    sigma_max: float = SIGMA_MAX  # largest noise level (SVD's scheduler value)
    min_guidance_scale: float = 1.0  # classifier-free guidance of frame 0 ...
    max_guidance_scale: float = 3.0  # ... rising linearly to the last frame
    fps: int = 7  # fps micro-condition, passed as is (training uses the same value)
    motion_bucket_id: int = 127  # SVD's motion micro-condition
    noise_aug_strength: float = 0.02  # pixel-space noise added to the masked conditioning frames
    clip_source: str = "masked"  # image the CLIP embedding sees: masked | filled (propagated) | raw (leaks the object)
    first_frame_filling: bool = True  # fill frame 0's initial noise from future frames (the FFF-VDI idea)
    fill_source: str = "noise"  # what future frames lend frame 0: noise (their initial noise) | inversion (their
    #   visible latents inverted to sigma_max by the deterministic ODE; costs inversion_steps extra UNet calls)
    inversion_steps: int = 10  # Euler steps of that inversion
    seed: int = 42  # seed of every random draw; the same seed gives the same output


@dataclass
class WindowConfig:
    """Model canvas and long-video windows."""

    height: Optional[int] = None  # model canvas height (multiple of 64); frames are resized to fit, aspect kept, then
    #   padded. None: the training size stored beside model.checkpoint (its run's config.yaml), else 576
    width: Optional[int] = None  # model canvas width (multiple of 64); None: as height, else 1024
    num_frames: int = 25  # frames per window (25 for SVD-XT, 14 for SVD)
    overlap: int = 4  # frames shared by consecutive windows, cross-faded in pixels
    decode_chunk_size: int = 8  # frames decoded by the VAE at once (lower = less memory)
    region: str = "auto"  # fffvdi: full (whole frame fitted onto the canvas) | crop (per window, the union box of
    #   its masks plus `context`, widened to the canvas aspect, moved into the frame, scaled to the canvas up or
    #   down; pasted back inside the mask only) | auto (that crop grown to at least the canvas size, used when
    #   min(its canvas scale, 1) > min(the full frame's, 1): the canvas sees the hole in more detail; a frame that
    #   fits the canvas stays full). propagate: auto = full (a crop changed its quality by -0.7..+0.1 dB on the
    #   motion scenes); crop = one crop for the whole video (all masks' union plus `context`). telea: ignored
    context: float = 0.5  # crop margin on each side, as a fraction of the masks' box side (at least 32 pixels)


@dataclass
class MemoryConfig:
    """Speed and memory switches."""

    offload: str = "none"  # none | model (idle components wait on the CPU)
    forward_chunk_size: Optional[int] = None  # chunk the UNet's feed-forward layers (lower memory, slower)
    attention: str = "sdpa"  # sdpa (PyTorch scaled-dot-product attention) | default


@dataclass
class OutputConfig:
    """What is written next to the result."""

    dir: Optional[str] = None  # output folder; None = results/<name>-<method>/ (<name>: the video file's stem or the
    #   frames folder's name, its parent's when generic: frames, images, JPEGImages, ...); written as <dir>.partial/ first
    overwrite: bool = False  # replace an existing result (or an unfinished <dir>.partial/) instead of refusing
    save_frames: bool = True  # frames/ as PNG with the input's file names (always written meanwhile, for --resume)
    save_mp4: bool = True  # inpainted.mp4 at the input fps
    save_comparison: bool = True  # comparison.mp4: input | result side by side
    save_masked_input: bool = True  # masked_input.mp4: mask as a coloured overlay
    feather: int = 0  # width in pixels of a soft blend at the mask edge (0 = hard paste)


@dataclass
class PropagateConfig:
    """The weight-free `propagate` method (fffvdi.propagation.video): flow-traced pixels, Telea for the rest."""

    radius: int = 150  # frames searched each way for pixels showing the hole's content (memory grows with it)
    combine: str = "nearest"  # nearest (fewest frames away, mean on a tie) | weighted (1/distance mix of both ways)
    blend: str = "none"  # none | poisson (gradient-domain blend that hides seams at the hole border)
    fb_check: bool = True  # reject landings on content the estimated flow marks as occluded
    telea_radius: int = 3  # OpenCV Telea radius: frames pre-filled for flow, never-revealed pixels


@dataclass
class InferenceConfig:
    """Everything scripts/inference.py reads."""

    method: str = "auto"  # auto (fffvdi when model.checkpoint is set, else propagate; resolved before the output is
    #   named and saved resolved in config.yaml) | fffvdi (diffusion) | propagate (weight-free flow propagation) |
    #   telea (per-frame spatial)
    model: ModelConfig = field(default_factory=ModelConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    propagate: PropagateConfig = field(default_factory=PropagateConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    fps: Optional[float] = None  # fps of a frames-folder input (video files keep their own); None = 24


DEFAULT_CANVAS = (576, 1024)  # SVD-XT's native (H, W)


def training_size(checkpoint: Optional[str]) -> Optional[tuple[int, int]]:
    """(H, W) a checkpoint was trained at: `data.size` of the config.yaml saved beside it or one folder up."""
    if not checkpoint:
        return None
    from pathlib import Path

    from omegaconf import OmegaConf

    for folder in (Path(checkpoint), Path(checkpoint).parent):
        path = folder / "config.yaml"
        if path.is_file():
            size = OmegaConf.select(OmegaConf.load(path), "data.size")
            if size is not None and len(size) == 2:
                return int(size[0]), int(size[1])
    return None


def resolve_canvas(cfg) -> None:
    """Fill an unset `window.height`/`window.width` from the checkpoint's training size, else SVD-XT's 576x1024."""
    if cfg.window.height is not None and cfg.window.width is not None:
        return
    size = training_size(cfg.model.checkpoint) or DEFAULT_CANVAS
    if cfg.window.height is None:
        cfg.window.height = size[0]
    if cfg.window.width is None:
        cfg.window.width = size[1]



def mask_options(cfg) -> dict:
    """`MaskSource` keyword arguments from the config's `mask` section (one video's run and the batch check alike)."""
    m = cfg.mask
    return dict(threshold=m.threshold, dilate=m.dilate, resize=m.resize, mode=m.mode)

AUTO_NOTICE = (
    "method auto -> propagate (weight-free flow propagation): no model.checkpoint given. For the diffusion result "
    "pass --checkpoint UNET_FOLDER (the unet/ folder scripts/train.py saves); it also needs SVD-XT, a gated hub "
    "model: accept its licence on huggingface.co/{hub_id} and run `huggingface-cli login`, or pass a local "
    "copy with model.pretrained=DIR"
)


def resolve_method(cfg) -> str:
    """Replace `method: auto` by the method it means (fffvdi with a checkpoint, else propagate, with a notice why)."""
    if cfg.method == "auto":
        cfg.method = "fffvdi" if cfg.model.checkpoint else "propagate"
        if cfg.method == "propagate":
            import logging

            from fffvdi.config import DEFAULT_PRETRAINED

            logging.getLogger(__name__).warning("notice: " + AUTO_NOTICE.format(hub_id=DEFAULT_PRETRAINED))
    return cfg.method


# Config keys with a closed set of values. Kept here (not beside their users) so the check runs before
# torch, diffusers or a model is imported; tests keep them equal to the users' own tuples.
CHOICES = {
    "method": ("auto", "fffvdi", "propagate", "telea"),
    "model.dtype": ("float32", "float16", "bfloat16", "fp32", "fp16", "bf16"),
    **SHARED_CHOICES,
    "mask.resize": ("nearest", "stretch", "error"),
    "mask.mode": ("mask", "box"),
    "sampling.clip_source": ("masked", "filled", "raw"),
    "sampling.fill_source": ("noise", "inversion"),
    "window.region": ("auto", "full", "crop"),
    "memory.offload": ("none", "model"),
    "memory.attention": ("sdpa", "default"),
    "propagate.combine": ("nearest", "weighted"),
    "propagate.blend": ("none", "poisson"),
}

# (key, lowest allowed, lowest is exclusive, why); None values are skipped (they mean "default").
RANGES = (
    ("fps", 0, True, "frames per second of a frames folder"),
    ("mask.threshold", 0, False, "a hole is value > threshold, in [0, 255)"),
    ("mask.dilate", 0, False, "dilation iterations"),
    ("flow.raft_iters", 1, False, "RAFT refinement iterations"),
    ("sampling.num_steps", 1, False, "Euler steps"),
    ("sampling.sigma_min", 0, True, "smallest noise level"),
    ("sampling.min_guidance_scale", 0, False, "classifier-free guidance scale"),
    ("sampling.max_guidance_scale", 0, False, "classifier-free guidance scale"),
    ("sampling.fps", 0, False, "fps micro-condition"),
    ("sampling.motion_bucket_id", 0, False, "motion micro-condition"),
    ("sampling.noise_aug_strength", 0, False, "noise augmentation strength"),
    ("sampling.inversion_steps", 1, False, "inversion Euler steps"),
    ("window.height", 64, False, "model canvas height"),
    ("window.width", 64, False, "model canvas width"),
    ("window.num_frames", 1, False, "frames per window"),
    ("window.overlap", 0, False, "frames shared by consecutive windows"),
    ("window.decode_chunk_size", 1, False, "frames decoded at once"),
    ("window.context", 0, False, "crop margin as a fraction of the masks' box"),
    ("memory.forward_chunk_size", 1, False, "feed-forward chunk size"),
    ("output.feather", 0, False, "blend width in pixels"),
    ("propagate.radius", 1, False, "frames searched each way"),
    ("propagate.telea_radius", 1, False, "Telea radius in pixels"),
)


def check_inference_config(cfg) -> None:
    """Raise ConfigError (one line naming the key and the fix) on any value inference would trip over later.

    Run right after loading, before any input is read or model loaded; `window.height/width` are
    checked only once set (call `resolve_canvas` first to check them too).
    """
    from omegaconf import OmegaConf

    from fffvdi.errors import ConfigError

    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is unknown; use one of {', '.join(allowed)}", key=key)
    for key, low, exclusive, what in RANGES:
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if value < low or (exclusive and value == low):
            bound = f"> {low}" if exclusive else f">= {low}"
            raise ConfigError(f"{key}={value} is out of range ({what}); set it {bound}", key=key)
    if cfg.mask.threshold >= 255:
        raise ConfigError(f"mask.threshold={cfg.mask.threshold} is out of range; set it below 255 (a hole is value > threshold)",
                          key="mask.threshold")
    s, w = cfg.sampling, cfg.window
    if not s.sigma_min < s.sigma_max:
        raise ConfigError(f"sampling.sigma_min={s.sigma_min} must be below sampling.sigma_max={s.sigma_max}; fix one of them",
                          key="sampling.sigma_min")
    for key in ("height", "width"):
        side = w[key]
        if side is not None and side % 64:
            raise ConfigError(f"window.{key}={side} is not a multiple of 64; use e.g. window.{key}={max(64, round(side / 64) * 64)}",
                              key=f"window.{key}")
    if w.overlap >= w.num_frames:
        raise ConfigError(
            f"window.overlap={w.overlap} must be smaller than window.num_frames={w.num_frames}; lower the overlap",
            key="window.overlap",
        )
    if cfg.method == "fffvdi":
        _check_device(cfg.model.device)


def device_problem(name: str) -> Optional[str]:
    """Why the device `name` cannot run here ("'gpu' is unknown; ..." / "cuda but this machine has no ..."), None
    when it can; callers prefix the flag or key that named it."""
    import re

    if name == "auto":
        return None
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", str(name)):
        return f"{name!r} is unknown; use auto, cpu, cuda, cuda:N or mps"
    import torch

    if name.startswith("cuda"):
        index = int(name.split(":")[1]) if ":" in name else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            return f"{name} but this machine has no such CUDA device; use cpu or auto"
    if name == "mps" and not torch.backends.mps.is_available():
        return f"{name} but MPS is not available here; use cpu or auto"
    return None


def _check_device(name: str) -> None:
    """`model.device` must name a device torch knows and that exists here."""
    from fffvdi.errors import ConfigError

    problem = device_problem(name)
    if problem is not None:
        raise ConfigError(f"model.device={problem}", key="model.device")
    if name.startswith("cuda"):
        import torch

        index = int(name.split(":")[1]) if ":" in name else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ConfigError(f"model.device={name} but this machine has no such CUDA device; use model.device=cpu or auto",
                              key="model.device")
