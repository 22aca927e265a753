"""RAFT weights from a local file (`flow.raft_weights`): torchvision's layout, or an original princeton-vl/RAFT
checkpoint (`raft-things.pth`, `raft-small.pth`, ...) renamed to torchvision's module names.

The original checkpoints were saved from `nn.DataParallel` (every key starts with `module.`) and name the modules
of the original code: `fnet` / `cnet` encoders (`conv1`, `norm1`, `layer1..3` blocks, `conv2`) and `update_block`
(`encoder`, `gru`, `flow_head`, `mask`). torchvision's `Raft_*_Weights.C_T_V1` are ports of the same weights.
"""
from __future__ import annotations

import functools
import os

import torch
from torch import nn

from fffvdi.errors import ModelLoadError

SETTING = "flow.raft_weights"
_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_ORIGINAL_ROOTS = ("fnet.", "cnet.", "update_block.encoder.", "update_block.gru.", "update_block.mask.")
_TORCHVISION_ROOTS = ("feature_encoder.", "context_encoder.", "update_block.motion_encoder.", "mask_predictor.")
_FIX = "pass an unmodified raft-things.pth (flow.method=raft_large), raft-small.pth (raft_small) or a torchvision RAFT .pth"

# Encoder stem and output conv: BasicEncoder / SmallEncoder -> torchvision FeatureEncoder.
_STEM = {"conv1": "convnormrelu.0", "norm1": "convnormrelu.1", "conv2": "conv"}
# The large encoders' ResidualBlock. `norm3` is the module also registered as `downsample.1`, so a batch-norm
# encoder (cnet) saves it twice; both names go to the same torchvision tensor.
_RESIDUAL = {
    "conv1": "convnormrelu1.0", "norm1": "convnormrelu1.1",
    "conv2": "convnormrelu2.0", "norm2": "convnormrelu2.1",
    "norm3": "downsample.1", "downsample.0": "downsample.0", "downsample.1": "downsample.1",
}
# The small encoders' BottleneckBlock: three convs, and `norm4` is the one shared with `downsample.1`. Its norms are
# instance norms (fnet) or none (cnet), so raft-small.pth holds no norm tensors; the entries keep the table complete.
_BOTTLENECK = {
    "conv1": "convnormrelu1.0", "norm1": "convnormrelu1.1",
    "conv2": "convnormrelu2.0", "norm2": "convnormrelu2.1",
    "conv3": "convnormrelu3.0", "norm3": "convnormrelu3.1",
    "norm4": "downsample.1", "downsample.0": "downsample.0", "downsample.1": "downsample.1",
}
_MOTION = {"convc1": "convcorr1.0", "convc2": "convcorr2.0", "convf1": "convflow1.0", "convf2": "convflow2.0",
           "conv": "conv.0"}


@functools.lru_cache(maxsize=2)
def module_table(variant: str) -> dict[str, str]:
    """Original module path -> torchvision module path for RAFT `variant` ('large' | 'small')."""
    large = variant == "large"
    table: dict[str, str] = {}
    for old, new in (("fnet", "feature_encoder"), ("cnet", "context_encoder")):
        table.update({f"{old}.{a}": f"{new}.{b}" for a, b in _STEM.items()})
        for layer in (1, 2, 3):
            for block in (0, 1):
                members = _RESIDUAL if large else _BOTTLENECK
                table.update({f"{old}.layer{layer}.{block}.{a}": f"{new}.layer{layer}.{block}.{b}"
                              for a, b in members.items()})
    motion = _MOTION if large else {k: v for k, v in _MOTION.items() if k != "convc2"}  # small: one corr conv
    table.update({f"update_block.encoder.{a}": f"update_block.motion_encoder.{b}" for a, b in motion.items()})
    for gate in ("z", "r", "q"):
        if large:  # SepConvGRU: suffix 1 = the 1x5 (horizontal) pass, 2 = the 5x1 (vertical) pass
            for i in (1, 2):
                table[f"update_block.gru.conv{gate}{i}"] = f"update_block.recurrent_block.convgru{i}.conv{gate}"
        else:  # one 3x3 ConvGRU
            table[f"update_block.gru.conv{gate}"] = f"update_block.recurrent_block.convgru1.conv{gate}"
    for conv in ("conv1", "conv2"):
        table[f"update_block.flow_head.{conv}"] = f"update_block.flow_head.{conv}"
    if large:  # mask = Sequential(conv 3x3, ReLU, conv 1x1): indices 0 and 2 hold the weights
        table["update_block.mask.0"] = "mask_predictor.convrelu.0"
        table["update_block.mask.2"] = "mask_predictor.conv"
    return table


def torchvision_name(key: str, variant: str) -> str | None:
    """torchvision's name for an original RAFT state-dict key (`module.` prefix allowed), or None if it has none."""
    module, _, param = key.removeprefix("module.").rpartition(".")
    target = module_table(variant).get(module)
    return f"{target}.{param}" if target is not None and param in _PARAMS else None


def is_original(keys: list[str]) -> bool:
    """Whether state-dict keys (`module.` prefix allowed) are in the original princeton-vl/RAFT layout."""
    return any(k.removeprefix("module.").startswith(_ORIGINAL_ROOTS) for k in keys)


def _guess_variant(keys: list[str]) -> str:
    """'large' when the checkpoint has the convex-upsampling mask head (raft_small has none), else 'small'."""
    return "large" if any("update_block.mask." in k or "mask_predictor." in k for k in keys) else "small"


def _fail(path: str, what: str, keys: list[str], variant: str) -> ModelLoadError:
    """One-line ModelLoadError naming the setting, the file, the problem and the fix (the variant when it differs)."""
    guess = _guess_variant(keys)
    hint = f"; the file looks like RAFT-{guess}: set flow.method=raft_{guess}" if guess != variant else f"; {_FIX}"
    return ModelLoadError(f"{SETTING}={path!r} {what}{hint}")


def _read(path: str) -> dict[str, torch.Tensor]:
    """The file's `{name: tensor}` dict (a `state_dict` entry when wrapped); one-line ModelLoadError otherwise."""
    if not os.path.isfile(path):
        raise ModelLoadError(f"{SETTING}={path!r} does not exist; point it to a RAFT .pth file ({_FIX.removeprefix('pass ')})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's messages span many lines: keep the first
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelLoadError(f"{SETTING}={path!r} is not a readable torch file ({type(exc).__name__}: {first}); {_FIX}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{SETTING}={path!r} holds no {{name: tensor}} state dict ({type(state).__name__}); {_FIX}")
    return {str(k): v for k, v in state.items()}


def _rename(state: dict[str, torch.Tensor], variant: str, path: str) -> dict[str, torch.Tensor]:
    """Original keys -> torchvision keys; the twice-saved norm3/norm4 == downsample.1 tensors are kept once."""
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for key, value in state.items():
        new = torchvision_name(key, variant)
        if new is None:
            raise _fail(path, f"has original RAFT key {key!r} with no counterpart in torchvision's raft_{variant}",
                        list(state), variant)
        if new in out:
            if not torch.equal(out[new], value):  # one module under two names must hold one value
                raise _fail(path, f"holds different tensors under {source[new]!r} and {key!r}, both {new!r}",
                            list(state), variant)
            continue
        out[new], source[new] = value, key
    return out


def load_raft_weights(model: nn.Module, path: str, variant: str) -> str:
    """Load `path` (torchvision or original layout) strictly into torchvision RAFT `model`; returns the layout."""
    state = _read(path)
    keys = list(state)
    if is_original(keys):
        layout, state = "original", _rename(state, variant, path)
    elif any(k.removeprefix("module.").startswith(_TORCHVISION_ROOTS) for k in keys):
        layout = "torchvision"  # a DataParallel-wrapped torchvision model saves `module.` too
        state = {k.removeprefix("module."): v for k, v in state.items()}
    else:
        raise ModelLoadError(f"{SETTING}={path!r} is neither a torchvision RAFT state dict nor an original "
                             f"princeton-vl/RAFT checkpoint (first key {keys[0]!r}); {_FIX}")
    expected = model.state_dict()
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise _fail(path, f"has {len(unexpected)} tensor(s) torchvision's raft_{variant} lacks, first {unexpected[0]!r}",
                    keys, variant)
    # A dict without version metadata gets num_batches_tracked filled in by BatchNorm itself, so only those may lack.
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    if missing:
        raise _fail(path, f"lacks {len(missing)} of raft_{variant}'s tensors, first {missing[0]!r}", keys, variant)
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise _fail(path, f"has {k!r} shaped {tuple(v.shape)}, raft_{variant} expects {tuple(expected[k].shape)}",
                        keys, variant)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # anything the checks above missed, still on one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ModelLoadError(f"{SETTING}={path!r} does not load into raft_{variant} ({first}); {_FIX}") from exc
    return layout
