"""Inference configuration schema (configs/inference.yaml overrides these defaults) and the values it resolves
(`method: auto`, an unset canvas); `fffvdi.inpaint.checks` checks it."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from fffvdi.config import DEFAULT_PRETRAINED, FlowConfig, MaskConfig, ModelConfig
from fffvdi.diffusion.recipe import SIGMA_MAX, SIGMA_MIN


@dataclass
class SamplingConfig:
    """EDM sampling and SVD micro-conditioning."""

    num_steps: int = 25  # Euler steps on Karras sigmas
    sigma_min: float = SIGMA_MIN  # smallest noise level of the schedule (SVD's scheduler value, fffvdi/diffusion/recipe.py)
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
    fit: str = "keep"  # keep (resize with the aspect ratio kept, pad the rest: nothing is distorted) | stretch
    #   (resize onto the whole canvas whatever the aspect, as the FFF-VDI release does: a 16:9 input on 512x256 is
    #   widened by 12.5 % for the model and narrowed back afterwards)
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
    compile: str = "none"  # torch.compile: none (eager) | module (each recurrent step of the propagation module, whose
    #   many small kernels are its GPU cost) | unet (the whole UNet forward, module included). The first window pays
    #   the compilation (tens of seconds to minutes), later windows of the same size reuse it; outputs equal eager's
    #   within float tolerance. Eager stays the default until a GPU measures the gain (README, Benchmarks)


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
    """The weight-free `propagate` method (fffvdi.propagate.video): flow-traced pixels, a spatial fill for the rest."""

    radius: int = 150  # frames searched each way for pixels showing the hole's content (memory grows with it)
    combine: str = "weighted"  # weighted (1/distance mix of both ways; chosen on real footage, README) | nearest
    #   (fewest frames away, mean on a tie)
    blend: str = "none"  # none | poisson (gradient-domain blend that hides seams at the hole border)
    fb_check: bool = True  # reject landings on content the estimated flow marks as occluded
    telea_radius: int = 3  # OpenCV Telea radius: frames pre-filled for flow, never-revealed pixels
    unrevealed: str = "frame"  # pixels no frame shows: frame (filled spatially anew in every frame) | carry (filled
    #   once where they first occur, then carried along the flow and pasted seamlessly: far less flicker, but a poor
    #   first fill is kept; README, propagate)
    spatial: str = "membrane"  # spatial filler of never-revealed pixels: membrane (harmonic: smooth, the
    #   steadiest over time; README, propagate on real footage) | telea | ns (OpenCV Telea, Navier-Stokes)
    trust: Optional[float] = None  # follow completed flow only where the flows left/right/above/below the hole spread
    #   by at most this many pixels (README: helps fixed holes beside fast foreground, costs moving holes); None: always
    layers: Optional[float] = 1.0  # a hole that stays put gets its flow from its border's dominant motion only:
    #   border pixels off that layer's affine motion by more than this many px are left out (README); None: all
    agree: Optional[float] = 80.0  # a hole pixel whose past and future sources differ by more than this (mean |RGB
    #   difference|, 0-255) is left to the spatial fill: one of them came along a wrong flow (README); None: off
    max_jump: Optional[float] = None  # end a trajectory where its flow changes by more than this + half its speed
    #   (px/frame) in one step: a resting hole point picked up by a passing object's flow (README); None: off


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
            logging.getLogger(__name__).warning("notice: " + AUTO_NOTICE.format(hub_id=DEFAULT_PRETRAINED))
    return cfg.method
