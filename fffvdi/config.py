"""OmegaConf configuration: structured defaults, YAML files, CLI dotlist overrides, saving.

Every schema is a dataclass whose fields are documented where they are defined. Loading merges,
in order: the dataclass defaults, an optional YAML file, then `key=value` overrides from the
command line. Unknown keys and badly typed values raise `ConfigError` naming the key. A str-typed
key takes the text as written: YAML 1.1 reads `no`/`off`/`yes`/`on` as booleans (and `1e3` as a
number), so `train.mixed_precision=no` would otherwise arrive as 'False'.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Type

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fffvdi.errors import ConfigError
from fffvdi.files import write_atomic

DEFAULT_PRETRAINED = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"


@dataclass
class PropagationConfig:
    """The propagation (DNA) module created when the UNet comes without one (a plain SVD folder).

    A saved FFF-VDI UNet always rebuilds the module it was trained with (propagation_config.json).
    """

    arch: str = "light"  # light (128-wide bottleneck, 4.1 M params at 320 ch) | official (the authors' layout, 20.0 M)
    hidden: Optional[int] = None  # light only: propagation width (None = min(channels, 128))
    identity_init: bool = True  # zero the last fusion conv so a pretrained SVD is unchanged at step 0 (official: false)
    flow_units: Optional[str] = None  # how pixel flows and masks reach the latent grid: cells (rescaled to latent
    #   cells, antialiased) | pixels (the release: plain bilinear, values left in pixels, masks nearest top-left);
    #   null = the arch's own (light: cells, official: pixels). fffvdi/models/propagation.py ArchRules has the details


@dataclass
class ModelConfig:
    """Where the SVD components and the fine-tuned FFF-VDI UNet come from."""

    pretrained: str = DEFAULT_PRETRAINED  # hub id or local folder in diffusers layout (model_index.json, unet/, vae/, ...)
    checkpoint: Optional[str] = None  # folder of a fine-tuned FFF-VDI UNet saved by training (overrides pretrained's
    #   unet). Inference with method fffvdi refuses to run without it when pretrained is a hub id (SVD's own UNet does
    #   not inpaint); a local pretrained folder's unet/ runs as is (configs/inference_tiny.yaml's random smoke model)
    variant: Optional[str] = None  # weight variant on the hub, e.g. "fp16" to download half-size files
    dtype: str = "float16"  # float32 | float16 | bfloat16 (float16/bfloat16 fall back to float32 on CPU)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    propagation: PropagationConfig = field(default_factory=PropagationConfig)


@dataclass
class FlowConfig:
    """Optical flow estimation and completion inside the masks."""

    method: str = "dis"  # dis (OpenCV, no weights) | raft_large | raft_small (torchvision RAFT)
    raft_weights: Optional[str] = None  # local RAFT state-dict file; None = torchvision's weight enum (downloads when online)
    raft_iters: int = 20  # RAFT refinement iterations (the official recipe uses 20)
    completion: str = "smooth"  # completion inside holes: smooth (membrane, multigrid) | edge_aware (membrane
    #   weighted by the pre-filled frame's edges; used by `propagate`) | cv2_inpaint (OpenCV NS per channel) |
    #   telea | propainter (ProPainter's learned recurrent network, as the FFF-VDI release; needs completion_weights)
    completion_weights: Optional[str] = None  # path to ProPainter's recurrent_flow_completion.pth, needed by
    #   completion=propainter (github.com/sczhou/ProPainter/releases/download/v0.1.0/recurrent_flow_completion.pth)


@dataclass
class MaskConfig:
    """How masks are read and grown."""

    threshold: int = 127  # a mask pixel is a hole where its value (0..255) is above this
    dilate: int = 4  # iterations of a 3x3 cross dilation applied to every mask (0 = none)
    source_margin: int = 2  # propagate reads other frames only outside the mask grown by this many (<= dilate; the
    #   output still replaces all of `dilate`): the inner ring, where an object's soft edge lies, stays out (README)
    resize: str = "nearest"  # mask size differs from frame size: nearest (resize if the aspect ratio matches within
    #   1% or a pixel, else error) | stretch (resize whatever the aspect) | error (refuse any size difference)
    mode: str = "mask"  # mask (as drawn) | box (each frame's mask becomes its bounding box, as the official validation)


DTYPES = {  # model.dtype names (the short ones too) -> torch dtype
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
}


def dtype_from_name(name: str) -> torch.dtype:
    """Map 'float32' | 'float16' | 'bfloat16' (and fp32/fp16/bf16) to a torch dtype."""
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype '{name}'; use one of float32, float16, bfloat16")
    return DTYPES[name]


def device_problem(name: str) -> Optional[str]:
    """Why the device `name` cannot run here ("'gpu' is unknown; ..." / "cuda but this machine has no ..."), None
    when it can; callers prefix the flag or key that named it (model.device, evaluate.py's --device)."""
    if name == "auto":
        return None
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", str(name)):
        return f"{name!r} is unknown; use auto, cpu, cuda, cuda:N or mps"
    if name.startswith("cuda"):
        index = int(name.split(":")[1]) if ":" in name else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            return f"{name} but this machine has no such CUDA device; use cpu or auto"
    if name == "mps" and not torch.backends.mps.is_available():
        return f"{name} but MPS is not available here; use cpu or auto"
    return None


def check_choices(cfg: DictConfig, choices: dict) -> None:
    """ConfigError naming the first key of `choices` ({dotted key: allowed values}) whose value is not allowed."""
    for key, allowed in choices.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            names = [str(a) if a is not None else "null (the default)" for a in allowed]
            raise ConfigError(f"{key}={value!r} is unknown; use one of {', '.join(names)}", key=key)


def _one_line(err: OmegaConfBaseException) -> str:
    """First line of an OmegaConf error plus the full key it concerns."""
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    key = getattr(err, "full_key", None)
    return f"config key '{key}': {first}" if key else first


def _override_keys(overrides: Sequence[str]) -> set[str]:
    return {o.split("=", 1)[0].strip().lstrip("+~") for o in overrides}


def where_set(key: str, path: Optional[str | Path], overrides: Sequence[str]) -> str:
    """'on the command line', 'in FILE' or 'by default': where the value of dotted `key` came from."""
    if any(key == k or key.startswith(k + ".") for k in _override_keys(overrides)):
        return "on the command line"
    if path is not None and Path(path).is_file():
        try:
            if OmegaConf.select(OmegaConf.load(path), key, default="<unset>") != "<unset>":
                return f"in {path}"
        except Exception:  # unreadable YAML was reported when loading
            pass
    return "by default"


_UNIONS = (typing.Union, getattr(types, "UnionType", typing.Union))  # Optional[str] and str | None (3.10+)


def _plain(hint: Any) -> Any:
    """`hint` without the Optional[...] around it."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in _UNIONS and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else Any
    return hint


@functools.cache
def _field_types(schema: type) -> dict:
    """{field: type} of a dataclass schema."""
    try:
        return typing.get_type_hints(schema)
    except (NameError, TypeError):  # an annotation that cannot be resolved: its values stay as parsed
        return {}


def _as_written(value: Any, raw: Any, hint: Any) -> Any:
    """`value` as YAML 1.1 parsed it, with `raw` (the same text, every scalar a string) put back wherever the schema
    type `hint` wants a str but the parser made a bool or a number of the text (`no` -> False, `1e3` -> 1000.0)."""
    hint = _plain(hint)
    if hint is str:
        return raw if isinstance(raw, str) and value is not None and not isinstance(value, str) else value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict) and isinstance(raw, dict):
        fields = _field_types(hint)
        return {k: _as_written(v, raw.get(k), fields[k]) if k in fields else v for k, v in value.items()}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and isinstance(value, list) and isinstance(raw, list) and len(raw) == len(value):
        return [_as_written(v, r, args[0]) for v, r in zip(value, raw)]
    if origin is dict and len(args) == 2 and isinstance(value, dict) and isinstance(raw, dict):
        return {k: _as_written(v, raw.get(k), args[1]) for k, v in value.items()}
    return value


def _with_text(layer: DictConfig, raw: Any, schema: type) -> DictConfig:
    """`layer` with the str-typed keys of `schema` holding the text the user wrote (see `_as_written`)."""
    value = OmegaConf.to_container(layer, resolve=False)  # interpolations and ??? stay as written
    fixed = _as_written(value, raw, schema)
    return layer if fixed == value else OmegaConf.create(fixed)


def _raw_yaml(path: Path) -> Any:
    """The YAML file with every scalar a string (BaseLoader resolves no types), None if unreadable."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    except (OSError, UnicodeError, yaml.YAMLError):  # OmegaConf.load read it: leave its values as parsed
        return None


def _raw_dotlist(overrides: Sequence[str]) -> dict:
    """The `key=value` overrides as a nested dict of the values' text (a list value as a list of texts)."""
    raw: dict = {}
    for override in overrides:
        key, text = override.split("=", 1)
        try:
            value = yaml.load(text, Loader=yaml.BaseLoader)
        except yaml.YAMLError:  # OmegaConf reported (or accepted) it; its parse stands
            continue
        *parents, last = key.strip().split(".")
        node = raw
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return raw


def load_config(
    schema: Type,
    path: Optional[str | Path] = None,
    overrides: Sequence[str] = (),
    check: Optional[Callable[[DictConfig], None]] = None,
) -> DictConfig:
    """Merge `schema` defaults, the YAML at `path` and dotlist `overrides` (e.g. ['sampling.num_steps=10']), then
    run `check(cfg)`; every error says whether the bad value came from the command line, the file or a default."""
    cfg = OmegaConf.structured(schema)
    layers = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}; pass an existing YAML with --config")
        try:
            layer = OmegaConf.load(path)
        except Exception as err:  # YAML syntax errors come from several libraries
            raise ConfigError(f"could not parse config {path}: {str(err).splitlines()[0]}") from err
        layers.append((_with_text(layer, _raw_yaml(path), schema), f" (in {path})"))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override '{bad[0]}' is not of the form key=value (e.g. sampling.num_steps=10)")
    try:
        layer = OmegaConf.from_dotlist(list(overrides))
        layers.append((_with_text(layer, _raw_dotlist(overrides), schema), " (on the command line)"))
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err) + " (on the command line); fix that override") from None
    where = ""
    try:
        for layer, where in layers:
            cfg = OmegaConf.merge(cfg, layer)
        where = ""
        OmegaConf.to_container(cfg, resolve=True)  # surface interpolation errors now, not mid-run
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err) + where + "; fix or remove that key") from None
    # `???` in the YAML marks a value the user must give (e.g. weight files); merging keeps the schema's default
    # there, so the keys are read from the file itself.
    required = OmegaConf.missing_keys(layers[0][0]) if path is not None else set()
    missing = sorted(required - _override_keys(overrides))
    if missing:
        source = f"{path}" if path is not None else "the config"
        raise ConfigError(f"{source} needs {' and '.join(missing)} (set to ??? there): pass {'them' if len(missing) > 1 else 'it'} on the command line, "
                          f"e.g. {missing[0]}=/path/to/file; README says where each comes from", key=missing[0])
    if check is not None:
        try:
            check(cfg)
        except ConfigError as err:
            if err.key is None:
                raise
            raise ConfigError(f"{err} (set {where_set(err.key, path, overrides)})", key=err.key) from None
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, OmegaConf.to_yaml(cfg, resolve=True))  # a reader (or a kill) never sees half a file

