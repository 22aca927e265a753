"""SVD's UNet with the DNA propagation module applied to the conv_in features of every call.

The diffusers `UNetSpatioTemporalConditionModel` is wrapped, not copied: a forward hook on
`unet.conv_in` reshapes its `[(B F), C, h, w]` output to `[B, F, C, h, w]`, runs the propagation
module with the masks/flows the wrapper's `forward` put in a context, and returns the result.
Saved folders are diffusers UNet folders plus `propagation.safetensors` + `propagation_config.json`,
so a plain SVD `unet/` folder loads too (with a fresh, identity propagation module).
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import torch
from einops import rearrange
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
from safetensors.torch import load_file, save_file

from fffvdi.errors import ConfigError, InputError, ModelLoadError
from fffvdi.models.propagation import ARCH_RULES, build_propagation

logger = logging.getLogger(__name__)

PROPAGATION_WEIGHTS = "propagation.safetensors"
PROPAGATION_CONFIG = "propagation_config.json"


# memory.compile: what runs under torch.compile. none: eager; module: each recurrent step of the propagation module
# (its many small kernels are the module's GPU cost); unet: the whole UNet forward, the module included.
COMPILE_TARGETS = ("none", "module", "unet")
TEMPORAL_BLOCK = "TemporalBasicTransformerBlock"  # diffusers' class of SVD's temporal_transformer_blocks


def _checkpointed(block: torch.nn.Module, forward, *args, **kwargs):
    """`forward(*args, **kwargs)` under activation checkpointing while training with gradients."""
    if block.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def checkpoint_temporal_blocks(unet: torch.nn.Module, enabled: bool) -> int:
    """Checkpoint (or stop checkpointing) every temporal transformer block of `unet`; returns how many.

    diffusers' `enable_gradient_checkpointing` checkpoints SVD's resnets and spatial transformer blocks but
    runs the temporal blocks plainly, and those are the ones fine-tuning trains: their activations then
    dominate training memory. The block's `forward` is wrapped per instance (names and weights unchanged).
    """
    blocks = [m for m in unet.modules() if type(m).__name__ == TEMPORAL_BLOCK]
    for block in blocks:
        block.__dict__.pop("forward", None)  # back to the class's forward
        if enabled:
            block.forward = functools.partial(_checkpointed, block, block.forward)
    return len(blocks)


class FFFVDIUNet(torch.nn.Module):
    """`UNetSpatioTemporalConditionModel` + a propagation module (`fffvdi.models.propagation`) after conv_in."""

    def __init__(self, unet: torch.nn.Module, propagation: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.unet = unet
        channels = unet.conv_in.out_channels
        if propagation is None:
            propagation = build_propagation(channels).to(device=unet.device, dtype=unet.dtype)
        if propagation.config["channels"] != channels:
            raise InputError(f"propagation channels={propagation.config['channels']} must equal the UNet's "
                             f"conv_in out_channels={channels}")
        self.propagation = propagation
        self.propagation_enabled = True
        self._context: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # set only inside forward
        self.unet.conv_in.register_forward_hook(self._conv_in_hook)

    # --- diffusers-like attributes -------------------------------------------------------------
    @property
    def config(self):
        """The wrapped UNet's diffusers config."""
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the wrapped UNet."""
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        """Device of the wrapped UNet."""
        return self.unet.device

    @property
    def flow_units(self) -> str:
        """How the propagation module wants latent-size flows and masks: cells | pixels (see ArchRules.flow_units)."""
        return self.propagation.config.get("flow_units", "cells")

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the UNet blocks, its temporal transformer blocks and each recurrent propagation step."""
        self.unet.enable_gradient_checkpointing()
        checkpoint_temporal_blocks(self.unet, True)
        self.propagation.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        """Undo `enable_gradient_checkpointing`."""
        self.unet.disable_gradient_checkpointing()
        checkpoint_temporal_blocks(self.unet, False)
        self.propagation.gradient_checkpointing = False

    def set_propagation_enabled(self, enabled: bool) -> None:
        """Switch the propagation module on or off (off = plain SVD UNet)."""
        self.propagation_enabled = bool(enabled)

    def set_compile(self, target: str, backend: str = "inductor", mode: str | None = None) -> None:
        """Run `target` (one of COMPILE_TARGETS) through `torch.compile(backend, mode)` from the next call on; "none"
        returns to eager. Wrapped in place (diffusers' forward is not copied); weights and state dict are unchanged."""
        if target not in COMPILE_TARGETS:
            raise ConfigError(f"memory.compile={target!r} is unknown; use one of {', '.join(COMPILE_TARGETS)}",
                              key="memory.compile")
        prop = self.propagation
        if hasattr(prop, "compile_step"):  # DNA: compile the step, the flow preparation stays one eager batch
            prop.compile_step(backend if target == "module" else None, mode)
        elif target == "module":  # another registered module: its whole forward
            prop.compile(backend=backend, mode=mode, dynamic=False)
        else:
            prop._compiled_call_impl = None  # what nn.Module.compile sets; None = eager
        if target == "unet":  # nn.Module.compile wraps the call, hooks included: the module runs inside the graph
            self.unet.compile(backend=backend, mode=mode, dynamic=False)
        else:
            self.unet._compiled_call_impl = None

    # --- forward ---------------------------------------------------------------------------------
    def _conv_in_hook(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """Replace conv_in's output by the propagated features when a context is set."""
        if self._context is None or not self.propagation_enabled:
            return None  # keep conv_in's output unchanged
        masks, flows_fw, flows_bw = self._context
        feats = rearrange(output, "(b f) c h w -> b f c h w", f=masks.shape[1])
        feats = self.propagation(feats, masks, flows_fw, flows_bw)
        return rearrange(feats, "b f c h w -> (b f) c h w")

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        masks: torch.Tensor | None = None,
        flows_fw: torch.Tensor | None = None,
        flows_bw: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ):
        """`sample [B, F, 8, h, w]` -> prediction `[B, F, 4, h, w]`; masks/flows None skip propagation.

        Masks/flows with a batch that divides B are repeated (e.g. one set for both CFG halves).
        `return_dict` exists only for drop-in use by diffusers pipelines: False -> `(sample,)`,
        True -> diffusers' output object; left None the plain tensor is returned.
        """
        context = self._build_context(sample, masks, flows_fw, flows_bw)
        self._context = context
        try:
            out = self.unet(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True)
        finally:
            self._context = None  # never leak masks into a later call (e.g. a plain SVD call)
        if return_dict is None:
            return out.sample
        return out if return_dict else (out.sample,)

    @staticmethod
    def _build_context(sample, masks, flows_fw, flows_bw):
        """Validate masks/flows against `sample` and broadcast their batch; None when propagation is skipped."""
        given = [x is not None for x in (masks, flows_fw, flows_bw)]
        if not any(given):
            return None
        if not all(given):
            raise InputError("FFFVDIUNet.forward: pass masks, flows_fw and flows_bw together (or none of them)")
        if sample.ndim != 5:
            raise InputError(f"FFFVDIUNet.forward: sample must be [B, F, C, h, w], got {tuple(sample.shape)}")
        b, f, _, h, w = sample.shape
        out = []
        for name, x, shape in (("masks", masks, (f, 1, h, w)), ("flows_fw", flows_fw, (f - 1, 2, h, w)),
                               ("flows_bw", flows_bw, (f - 1, 2, h, w))):
            if x.ndim != 5 or tuple(x.shape[1:]) != shape or b % x.shape[0] != 0:
                raise InputError(f"FFFVDIUNet.forward: {name} must be [B, {', '.join(map(str, shape))}] with B "
                                 f"dividing the sample batch {b} (latent resolution), got {tuple(x.shape)}")
            x = x.to(sample.device)
            out.append(x.repeat(b // x.shape[0], 1, 1, 1, 1) if x.shape[0] != b else x)
        return tuple(out)

    # --- saving / loading ------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """Write the diffusers UNet folder plus `propagation.safetensors` and `propagation_config.json`."""
        save_directory = Path(save_directory)
        self.unet.save_pretrained(save_directory, **kwargs)
        state = {k: v.detach().contiguous().cpu() for k, v in self.propagation.state_dict().items()}
        save_file(state, str(save_directory / PROPAGATION_WEIGHTS))
        (save_directory / PROPAGATION_CONFIG).write_text(json.dumps(self.propagation.config, indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls, path: str | Path, subfolder: str | None = None, torch_dtype: torch.dtype | None = None,
        propagation: dict | None = None, **kwargs
    ) -> "FFFVDIUNet":
        """Load a UNet folder (or SVD root with `subfolder="unet"`, or hub id) and its propagation module if saved;
        else a fresh module built with the `propagation` arguments (arch, hidden, identity_init)."""
        from diffusers import UNetSpatioTemporalConditionModel

        try:
            unet = UNetSpatioTemporalConditionModel.from_pretrained(
                path, subfolder=subfolder, torch_dtype=torch_dtype, **kwargs
            )
        except (OSError, ValueError) as e:
            where = f"{path}" + (f" (subfolder '{subfolder}')" if subfolder else "")
            raise ModelLoadError(f"cannot load the SVD UNet from {where}: {str(e).splitlines()[0]}; pass a "
                                 f"diffusers UNet folder, an SVD root with subfolder='unet', or a cached hub id") from e
        files = _find_propagation_files(path, subfolder, kwargs)
        if files is None:
            fresh = build_propagation(unet.conv_in.out_channels, **(propagation or {}))
            init = "identity-initialised" if fresh.config["identity_init"] else "randomly initialised"
            # A base SVD (loaded with its subfolder) never has a module: a fresh one is expected, not worth a warning.
            log = logger.debug if subfolder else logger.warning
            log("No %s next to the UNet weights in %s: using a fresh %s propagation module (arch %s)",
                PROPAGATION_WEIGHTS, path, init, fresh.config["arch"])
            return cls(unet, fresh.to(device=unet.device, dtype=unet.dtype))
        return cls(unet, _load_propagation(*files, unet=unet))


def _find_propagation_files(path, subfolder: str | None, kwargs: dict) -> tuple[Path, Path] | None:
    """Locate the propagation weights + config beside the UNet weights (local folder or hub cache)."""
    local = Path(path) / (subfolder or "")
    if Path(path).is_dir():
        pair = (local / PROPAGATION_WEIGHTS, local / PROPAGATION_CONFIG)
        return pair if all(p.is_file() for p in pair) else None
    hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
    try:
        return tuple(
            Path(hf_hub_download(str(path), name, subfolder=subfolder, **hub_kwargs))
            for name in (PROPAGATION_WEIGHTS, PROPAGATION_CONFIG)
        )
    except (EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError):
        return None  # a plain SVD repo has no propagation files


def _load_propagation(weights: Path, config: Path, unet: torch.nn.Module) -> torch.nn.Module:
    """Build the propagation module from its config and load its weights strictly."""
    try:
        saved = json.loads(config.read_text())
        if saved.get("arch", "light") in ARCH_RULES:  # a DNA module saved before its refinement rule was stored
            saved.setdefault("residual", False)  # replaced its feature then
        module = build_propagation(**saved)
        module.load_state_dict(load_file(str(weights)), strict=True)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        raise ModelLoadError(f"cannot load the propagation module from {weights.parent}: {str(e).splitlines()[0]}; "
                             f"re-save it with FFFVDIUNet.save_pretrained") from e
    return module.to(device=unet.device, dtype=unet.dtype)
