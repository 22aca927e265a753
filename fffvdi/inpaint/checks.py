"""Checks of an inference config: every value inference would trip over later fails here, in one line naming the
key and the fix, before any input is read or model loaded. Closed choices come from the code that implements them."""
from __future__ import annotations

from omegaconf import OmegaConf

from fffvdi.config import DTYPES, check_choices, device_problem
from fffvdi.errors import ConfigError
from fffvdi.flow.completion import FLOW_COMPLETERS
from fffvdi.flow.estimators import FLOW_ESTIMATORS
from fffvdi.flow.weights import flow_weight_problems
from fffvdi.inpaint.canvas import FITS
from fffvdi.inpaint.conditioner import CLIP_SOURCES
from fffvdi.inpaint.methods import METHODS
from fffvdi.inpaint.pipeline import ATTENTIONS, FILL_SOURCES, OFFLOADS
from fffvdi.inpaint.region import REGIONS
from fffvdi.io.masks import MASK_MODES, RESIZE_MODES
from fffvdi.models.hub import is_local
from fffvdi.models.loading import model_source_problems
from fffvdi.models.propagation import FLOW_UNITS, PROPAGATION_MODULES
from fffvdi.models.unet import COMPILE_TARGETS
from fffvdi.propagate.carry import UNREVEALED
from fffvdi.propagate.pixels import COMBINE
from fffvdi.propagate.telea import SPATIAL
from fffvdi.propagate.options import BLEND

# Config keys with a closed set of values, read from the registries and constants of their implementations.
CHOICES = {
    "method": ("auto", *METHODS),
    "model.dtype": tuple(DTYPES),
    "model.propagation.arch": PROPAGATION_MODULES,  # registries are read live: a module registered later counts
    "model.propagation.flow_units": (None, *FLOW_UNITS),
    "flow.method": FLOW_ESTIMATORS,
    "flow.completion": FLOW_COMPLETERS,
    "mask.resize": RESIZE_MODES,
    "mask.mode": MASK_MODES,
    "sampling.clip_source": CLIP_SOURCES,
    "sampling.fill_source": FILL_SOURCES,
    "window.region": REGIONS,
    "window.fit": FITS,
    "memory.offload": OFFLOADS,
    "memory.attention": ATTENTIONS,
    "memory.compile": COMPILE_TARGETS,
    "propagate.combine": COMBINE,
    "propagate.blend": BLEND,
    "propagate.unrevealed": UNREVEALED,
    "propagate.spatial": tuple(SPATIAL),
}

# (key, lowest allowed, lowest is exclusive, why); None values are skipped (they mean "default").
RANGES = (
    ("fps", 0, True, "frames per second of a frames folder"),
    ("mask.threshold", 0, False, "a hole is value > threshold, in [0, 255)"),
    ("mask.dilate", 0, False, "dilation iterations"),
    ("mask.source_margin", 0, False, "dilation iterations"),
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
    ("propagate.trust", 0, False, "flow spread in pixels"),
    ("propagate.max_jump", 0, False, "flow change in pixels per frame"),
    ("propagate.agree", 0, False, "colour difference in grey levels"),
    ("propagate.layers", 0, False, "flow difference in pixels per frame"),
)


def check_inference_config(cfg) -> None:
    """Raise ConfigError (one line naming the key and the fix) on any value inference would trip over later.

    Run right after loading, before any input is read or model loaded; `window.height/width` are
    checked only once set (call `resolve_canvas` first to check them too).
    """
    check_choices(cfg, CHOICES)
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
    missing = flow_weight_problems(cfg.flow) if cfg.method != "telea" else {}  # telea uses no flows
    if missing:
        raise ConfigError("; ".join(missing.values()), key=next(iter(missing)))
    problem = device_problem(cfg.model.device) if cfg.method == "fffvdi" else None  # only diffusion uses it
    if problem is not None:
        raise ConfigError(f"model.device={problem}", key="model.device")


NEEDS_CHECKPOINT = (
    "method fffvdi needs a checkpoint: pass --checkpoint UNET_FOLDER (the unet/ folder scripts/train.py saves; "
    "model.checkpoint in a config), or --method propagate for the weight-free result; {pretrained}'s own UNet is not "
    "fine-tuned for inpainting (a local model.pretrained folder runs its unet/ as is)"
)


def model_problems(cfg) -> list[str]:
    """Every reason the method's model cannot be built, one line each with its fix, local paths before the hub; []
    for the weight-free methods. Loads nothing (asks the hub at most once), so it runs before any output is written.

    `method: fffvdi` without `model.checkpoint` is refused when `model.pretrained` is a hub id: the hub's SVD UNet
    alone does not inpaint. A local folder's unet/ is used as is (the tiny random model of configs/inference_tiny.yaml).
    """
    if cfg.method != "fffvdi":
        return []
    problems = []
    if cfg.model.checkpoint is None and not is_local(cfg.model.pretrained):
        problems.append(NEEDS_CHECKPOINT.format(pretrained=cfg.model.pretrained))
    where = "--checkpoint, model.checkpoint"  # scripts/inference.py's flag and the key it sets
    return problems + model_source_problems(cfg.model.pretrained, cfg.model.checkpoint, where)
