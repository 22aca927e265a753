"""Deformable Noise Alignment (DNA): learnable bidirectional flow-guided propagation of UNet features.

Runs on the conv_in features of all frames (SPEC 3.3). A backward pass (t = F-1 .. 0) carries a
running feature from frame t+1 to frame t, a forward pass (t = 0 .. F-1) carries the backward
outputs from t-1 to t; each step aligns the neighbour with a flow-guided modulated deformable
convolution (offsets = flow + bounded learned residue, as in BasicVSR++ / ProPainter) and mixes it
with the current feature. A zero-initialised fusion conv adds the result to the input, so a new
module is an exact identity and a pretrained SVD is unchanged at step 0. What a step reads from the flows
alone (warp grids, forward-backward validity) is computed once per forward, batched over the frame pairs,
and no step reads a tensor value on the host: on a GPU the recurrence is launch-bound, so every kernel and
sync per frame counts (tests/test_gpu_speed_paths.py holds both).

Propagation modules are registered by name in `PROPAGATION_MODULES` (config key `model.propagation.arch`);
`build_propagation` makes one, and a saved module is rebuilt from its `propagation_config.json` the same way.
`arch='light'` (default) runs the recurrent steps at a reduced width `hidden` (default
min(channels, 128)): 4.1 M parameters at 320 channels, about 3 % of an SVD UNet step in FLOPs.
`arch='official'` is the authors' `noise_refiner` (FFF-VDI release bf47e75) at the full width (no
projection, a 4-conv offset net): 20,035,744 parameters at 320 channels, and its forward: see
`ArchRules` for the places where the two archs compute differently (light shares the residual
refinement; `residual=False` rebuilds light modules saved before it did). `identity_init=False`
keeps the random last fusion conv as the official code starts (the module then changes a
pretrained SVD at step 0).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import DeformConv2d, deform_conv2d

from fffvdi.errors import ConfigError, InputError
from fffvdi.flow.warp import fb_consistency, flow_grid, warp_by_grid

_KERNEL = 3  # deformable kernel size (3x3)
FLOW_UNITS = ("cells", "pixels")  # model.propagation.flow_units, see ArchRules.flow_units


@dataclass(frozen=True)
class ArchRules:
    """How an arch computes, beyond its layers; `official` is the FFF-VDI release, `light` our own choices."""

    residual: bool  # a step returns aligned + backbone([current, aligned, mask]) (release) or the backbone output alone
    start_from_current: bool  # the first frame of a pass aligns nothing: `aligned` = its own feature (release) or 0
    slope: float  # leaky ReLU slope of the backbone and fusion convs (the offset net always uses 0.1)
    padding: str  # grid_sample padding of the warps (feature warp and fb check): zeros (release) | border
    fb_in_bounds: bool  # the fb check also requires the flow's target inside the image (the release has no such test)
    zero_deform_bias: bool  # the deformable conv's bias starts at 0 (release) or at torchvision's random init
    flow_units: str  # default model.propagation.flow_units: how pixel flows/masks reach the latent grid (the
    #   conditioner reads it). cells: antialiased bilinear flows rescaled to latent cells, masks sampled at each
    #   cell's centre. pixels (release): plain bilinear flows left in image pixels, masks sampled at each cell's
    #   top-left pixel (F.interpolate nearest); the module then warps latents by 8x the motion, as the release does.


ARCH_RULES = {
    # light takes the release's residual refinement (hole MSE -11 % on scripts/dev/compare_dna_rules.py's proxy);
    # its other rules measured no different from the release's (README, Differences from the official code).
    "light": ArchRules(residual=True, start_from_current=False, slope=0.1, padding="border", fb_in_bounds=True,
                       zero_deform_bias=False, flow_units="cells"),
    "official": ArchRules(residual=True, start_from_current=True, slope=0.2, padding="zeros", fb_in_bounds=False,
                          zero_deform_bias=True, flow_units="pixels"),
}


def _conv_lrelu_conv(c_in: int, c_mid: int, c_out: int, slope: float = 0.1) -> nn.Sequential:
    """Two 3x3 convs with a leaky ReLU between them."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_mid, 3, padding=1), nn.LeakyReLU(slope, inplace=True), nn.Conv2d(c_mid, c_out, 3, padding=1)
    )


class FlowGuidedDeformAlign(nn.Module):
    """Align a neighbour feature to the current frame: modulated deformable conv with offsets = flow + residue."""

    def __init__(self, hidden: int, deform_groups: int, max_residue: float, offset_layers: int = 3) -> None:
        super().__init__()
        self.deform_groups = deform_groups
        self.max_residue = max_residue
        taps = deform_groups * _KERNEL * _KERNEL
        # Predicts 2 offsets + 1 modulation logit per group and kernel tap from the condition:
        # `offset_layers` 3x3 convs with leaky ReLUs between (3 in the light design, 4 in the official one).
        layers: list[nn.Module] = [nn.Conv2d(2 * hidden + 4, hidden, 3, padding=1)]
        for _ in range(offset_layers - 2):
            layers += [nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(hidden, hidden, 3, padding=1)]
        layers += [nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(hidden, 3 * taps, 3, padding=1)]
        self.offset_net = nn.Sequential(*layers)
        # Zero-init: offsets start exactly at the flow, modulation at sigmoid(0) = 0.5.
        nn.init.zeros_(self.offset_net[-1].weight)
        nn.init.zeros_(self.offset_net[-1].bias)
        self.deform = DeformConv2d(hidden, hidden, _KERNEL, padding=_KERNEL // 2)

    def forward(self, neighbour: torch.Tensor, cond: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Sample `neighbour [N, C, h, w]` around `p + flow(p)`; `cond [N, 2C+4, h, w]`, `flow [N, 2, h, w]` (x, y)."""
        taps = self.deform_groups * _KERNEL * _KERNEL
        out = self.offset_net(cond)  # [N, 3 * taps, h, w]
        delta, logits = out[:, : 2 * taps], out[:, 2 * taps :]
        # deform_conv2d reads offsets as [N, (group, tap, (dy, dx)), h, w]: flip the flow to (y, x) and add it to
        # every group and tap by broadcasting (no tiled copy of the flow).
        residue = (self.max_residue * torch.tanh(delta)).unflatten(1, (taps, 2))  # [N, taps, 2, h, w]
        offset = (residue + flow.flip(1)[:, None]).flatten(1, 2)  # [N, 2 * taps, h, w]
        mask = torch.sigmoid(logits)
        if neighbour.dtype == torch.float32 and not torch.is_autocast_enabled(neighbour.device.type):
            return self.deform(neighbour, offset, mask=mask)
        # torchvision's deform_conv2d has no bfloat16 kernel (and autocast may hand it mixed dtypes): run it in float32.
        with torch.autocast(device_type=neighbour.device.type, enabled=False):
            d = self.deform
            out = deform_conv2d(
                neighbour.float(), offset.float(), d.weight.float(), d.bias.float() if d.bias is not None else None,
                stride=d.stride, padding=d.padding, dilation=d.dilation, mask=mask.float(),
            )
        return out.to(neighbour.dtype)


class DeformableNoiseAlignment(nn.Module):
    """Bidirectional recurrent propagation of `[B, F, C, h, w]` features guided by flows; identity at init."""

    def __init__(
        self, channels: int = 320, hidden: int | None = None, deform_groups: int = 16, max_residue: float = 3.0,
        arch: str = "light", identity_init: bool = True, flow_units: str | None = None, residual: bool | None = None,
    ) -> None:
        super().__init__()
        if arch not in PROPAGATION_MODULES:
            raise ConfigError(f"model.propagation.arch={arch!r} is unknown; use one of {', '.join(PROPAGATION_MODULES)}")
        if arch == "official":  # the authors' noise_refiner propagates at the full conv_in width
            if hidden not in (None, channels):
                raise ConfigError(f"model.propagation.hidden={hidden} conflicts with arch=official, which runs at the "
                                  f"full width {channels}; leave hidden unset or use arch=light")
            hidden = channels
        hidden = min(channels, 128) if hidden is None else hidden
        if channels < 1 or hidden < 1 or deform_groups < 1:
            raise ConfigError(f"DeformableNoiseAlignment: channels={channels}, hidden={hidden}, "
                              f"deform_groups={deform_groups} must all be positive")
        if hidden % deform_groups != 0:
            raise ConfigError(f"DeformableNoiseAlignment: deform_groups={deform_groups} must divide the "
                              f"propagation width hidden={hidden}; pick hidden as a multiple of deform_groups")
        self.rules = ARCH_RULES[arch]
        if residual is not None:  # modules saved before light became residual say residual=False
            self.rules = dataclasses.replace(self.rules, residual=bool(residual))
        flow_units = self.rules.flow_units if flow_units is None else flow_units
        if flow_units not in FLOW_UNITS:
            raise ConfigError(f"model.propagation.flow_units={flow_units!r} is unknown; use one of {', '.join(FLOW_UNITS)}")
        self._config = dict(channels=channels, hidden=hidden, deform_groups=deform_groups, max_residue=float(max_residue),
                            arch=arch, identity_init=bool(identity_init), flow_units=flow_units,
                            residual=self.rules.residual)
        self.gradient_checkpointing = False
        self._compiled: tuple[str, str | None] | None = None  # (backend, mode) of torch.compile'd steps; None = eager

        # light: a 3x3 projection to the narrower width; official: the features as they are.
        self.proj_in = nn.Identity() if arch == "official" else nn.Conv2d(channels, hidden, 3, padding=1)
        offset_layers = 4 if arch == "official" else 3
        self.align = nn.ModuleDict(
            {d: FlowGuidedDeformAlign(hidden, deform_groups, max_residue, offset_layers) for d in ("bwd", "fwd")}
        )
        slope = self.rules.slope
        self.backbone = nn.ModuleDict({d: _conv_lrelu_conv(2 * hidden + 1, hidden, hidden, slope) for d in ("bwd", "fwd")})
        self.fusion = _conv_lrelu_conv(2 * hidden + 1, hidden, channels, slope)
        if self.rules.zero_deform_bias:  # zeroed after construction: the random draws stay those of `light`
            for align in self.align.values():
                nn.init.zeros_(align.deform.bias)
        if identity_init:  # zero the last fusion conv: out == input exactly until training moves it
            nn.init.zeros_(self.fusion[-1].weight)
            nn.init.zeros_(self.fusion[-1].bias)

    @property
    def config(self) -> dict:
        """Constructor arguments (saved next to the weights)."""
        return dict(self._config)

    def _step(self, direction: str, current: torch.Tensor, mask: torch.Tensor, neighbour: torch.Tensor | None,
              guide: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        """One recurrent step: align `neighbour` (None at the sequence start) to frame t, mix with `current`.

        `guide` = (warp grid, flow, fb validity) of this frame pair (`_guides`, cast by `_as`); None at the start."""
        rules = self.rules
        if neighbour is None:  # the first frame of a pass has no neighbour
            aligned = current if rules.start_from_current else torch.zeros_like(current)
        else:
            grid, flow, valid = guide
            warped = warp_by_grid(neighbour, grid, padding_mode=rules.padding)
            cond = torch.cat([current, warped, flow, valid, mask], dim=1)
            aligned = self.align[direction](neighbour, cond, flow)  # [N, hidden, h, w]
        refined = self.backbone[direction](torch.cat([current, aligned, mask], dim=1))
        return aligned + refined if rules.residual else refined

    def _run_step(self, *args) -> torch.Tensor:
        """`_step`, compiled when `compile_step` asked for it, optionally under activation checkpointing."""
        compiled = getattr(self, "_compiled", None)  # absent on modules unpickled from before it existed
        if compiled is not None and args[3] is not None:  # a pass's first step (no neighbour) is too small to pay off
            step = functools.partial(_compiled_step(*compiled), self)
        else:
            step = self._step
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(step, *args, use_reentrant=False)
        return step(*args)

    def compile_step(self, backend: str | None = "inductor", mode: str | None = None) -> None:
        """Run each recurrent step through `torch.compile(backend, mode)` (one graph per direction; a pass's first
        step stays eager); None goes back to eager. The module's weights, state dict and copies are unaffected."""
        self._compiled = None if backend is None else (backend, mode)

    def _guides(
        self, flow: torch.Tensor, flow_back: torch.Tensor, dtype: torch.dtype
    ) -> list[tuple[torch.Tensor, ...]]:
        """Per frame pair of one pass, what its step reads from the flows alone: (warp grid, flow, fb validity) in
        `dtype`, then the same in float32. Flows are the same at every step, so this runs once per forward, batched
        over all pairs; `flow`, `flow_back` `[B, F-1, 2, h, w]` float32.

        Warping and the fb check run in float32 (squared flows overflow fp16 for large motion)."""
        rules, (b, pairs) = self.rules, flow.shape[:2]
        if pairs == 0:  # a single frame: no pair to align
            return []
        flat, back = flow.flatten(0, 1), flow_back.flatten(0, 1)  # [(B F-1), 2, h, w]
        grid = flow_grid(flat)
        valid = fb_consistency(flat, back, padding_mode=rules.padding, require_in_bounds=rules.fb_in_bounds)
        both = [grid.to(dtype), flat.to(dtype), valid.to(dtype), grid, flat, valid]
        return list(zip(*[x.unflatten(0, (b, pairs)).unbind(1) for x in both]))

    def forward(
        self, feats: torch.Tensor, masks: torch.Tensor, flows_fw: torch.Tensor, flows_bw: torch.Tensor
    ) -> torch.Tensor:
        """`feats [B, F, C, h, w]`, `masks [B, F, 1, h, w]` (1 = hole), flows `[B, F-1, 2, h, w]` -> `[B, F, C, h, w]`."""
        self._check_inputs(feats, masks, flows_fw, flows_bw)
        b, f, c, h, w = feats.shape
        masks = masks.to(feats.dtype)
        flows_fw, flows_bw = flows_fw.float(), flows_bw.float()
        cur = self.proj_in(feats.flatten(0, 1)).unflatten(0, (b, f))  # [B, F, hidden, h, w]
        cur_t, mask_t = cur.unbind(1), masks.unbind(1)  # per-frame views, taken once

        # Backward pass t = F-1 .. 0: flows_fw[:, t] brings frame t+1 into frame t (fb-checked against flows_bw[:, t]).
        guide = self._guides(flows_fw, flows_bw, cur.dtype)
        backward: list[torch.Tensor | None] = [None] * f
        backward[f - 1] = self._run_step("bwd", cur_t[f - 1], mask_t[f - 1], None, None)
        for t in range(f - 2, -1, -1):
            nb = backward[t + 1]
            backward[t] = self._run_step("bwd", cur_t[t], mask_t[t], nb, self._as(guide[t], cur_t[t], nb))

        # Forward pass t = 0 .. F-1 on the backward outputs: flows_bw[:, t-1] brings frame t-1 into t.
        guide = self._guides(flows_bw, flows_fw, cur.dtype)
        forward: list[torch.Tensor] = [self._run_step("fwd", backward[0], mask_t[0], None, None)]
        for t in range(1, f):
            nb = forward[t - 1]
            forward.append(self._run_step("fwd", backward[t], mask_t[t], nb, self._as(guide[t - 1], backward[t], nb)))

        fused = torch.cat([torch.stack(backward, 1), torch.stack(forward, 1), masks], dim=2)  # [B, F, 2*hidden+1, h, w]
        delta = self.fusion(fused.flatten(0, 1)).unflatten(0, (b, f))  # [B, F, C, h, w]
        return feats + delta

    @staticmethod
    def _as(
        guide: tuple[torch.Tensor, ...], current: torch.Tensor, neighbour: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """`guide`'s grid in the neighbour's dtype, flow and validity in the current feature's (what the warp and the
        condition read): the precast ones unless mixed precision left a pass in another dtype than the projection."""
        grid, flow, valid, grid32, flow32, valid32 = guide
        if grid.dtype == neighbour.dtype and flow.dtype == current.dtype:
            return grid, flow, valid
        return grid32.to(neighbour.dtype), flow32.to(current.dtype), valid32.to(current.dtype)

    def _check_inputs(self, feats: torch.Tensor, masks: torch.Tensor, flows_fw: torch.Tensor, flows_bw: torch.Tensor) -> None:
        """Raise InputError unless shapes follow the [B, F, C, h, w] / [B, F-1, 2, h, w] contract."""
        if feats.ndim != 5 or feats.shape[2] != self._config["channels"]:
            raise InputError(f"DNA feats must be [B, F, {self._config['channels']}, h, w], got {tuple(feats.shape)}")
        b, f, _, h, w = feats.shape
        if tuple(masks.shape) != (b, f, 1, h, w):
            raise InputError(f"DNA masks must be [B, F, 1, h, w] = {(b, f, 1, h, w)}, got {tuple(masks.shape)}")
        for name, fl in (("flows_fw", flows_fw), ("flows_bw", flows_bw)):
            if tuple(fl.shape) != (b, f - 1, 2, h, w):
                raise InputError(f"DNA {name} must be [B, F-1, 2, h, w] = {(b, f - 1, 2, h, w)}, got {tuple(fl.shape)}")


@functools.cache
def _compiled_step(backend: str, mode: str | None) -> Callable:
    """`DeformableNoiseAlignment._step` under torch.compile, shared by all modules (guards tell them apart); the
    module keeps only (backend, mode), so it stays picklable and a deepcopy does not call its original."""
    return torch.compile(DeformableNoiseAlignment._step, backend=backend, mode=mode, dynamic=False)


# model.propagation.arch -> constructor of the module run on the conv_in features. It is called with `channels` and
# the `model.propagation` options (hidden, identity_init); the module has a `config` dict (its arguments plus `arch`,
# saved as propagation_config.json) and maps (feats [B, F, C, h, w], masks, flows_fw, flows_bw) to new feats.
PROPAGATION_MODULES: dict[str, Callable[..., nn.Module]] = {
    "light": functools.partial(DeformableNoiseAlignment, arch="light"),  # 128-wide bottleneck (4.1 M at 320 ch)
    "official": functools.partial(DeformableNoiseAlignment, arch="official"),  # the authors' layout (20.0 M)
}


def build_propagation(channels: int, arch: str = "light", **options) -> nn.Module:
    """The propagation module `arch` for `channels` conv_in features; `options` (hidden, identity_init, ...) as in
    `model.propagation` or a saved `propagation_config.json` (which also names `arch` and `channels`)."""
    if arch not in PROPAGATION_MODULES:
        raise ConfigError(f"model.propagation.arch={arch!r} is unknown; use one of {', '.join(PROPAGATION_MODULES)}")
    return PROPAGATION_MODULES[arch](channels=channels, **options)
