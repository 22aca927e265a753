"""ProPainter's recurrent flow completion network, reimplemented so its released weights load as they are.

Layers, names and the order of operations follow the facts of ProPainter's `RecurrentFlowCompleteNet` (the
FFF-VDI release completes its RAFT flows with it, `recurrent_flow_completion.pth`, 5,079,555 parameters):
a replicate-padded strided Conv3d, two P3D encoder stages (spatial conv, then a temporal conv dilated by 2),
three dilated convs, second-order deformable propagation (backward then forward pass) at 1/8 resolution,
and bilinear (align_corners) x2 decoders with a skip from the 1/4 encoder. Axis layout here is
`[B, T, C, H, W]` as in the rest of fffvdi; Conv3d sees `[B, C, T, H, W]` inside the encoder only.

The one extension: the release needs H and W divisible by 8 (its reshapes at 1/8 resolution); other sizes are
replicate-padded at the bottom and right to the next multiple of 8 and cropped back. At multiples of 8 the
computation is the release's.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torchvision.ops import deform_conv2d

from fffvdi.errors import InputError, ModelLoadError

WEIGHTS_URL = "https://github.com/sczhou/ProPainter/releases/download/v0.1.0/recurrent_flow_completion.pth"
CHANNELS = 128  # width at 1/8 resolution (encoder output, propagation, first decoder)
STRIDE = 8  # total downsampling: H and W must be multiples of it
MAX_RESIDUE = 5.0  # deformable offsets are bounded to +-5 feature pixels (tanh)
DEFORM_GROUPS = 16


def _lrelu(slope: float = 0.2) -> nn.LeakyReLU:
    """The release's activation: in-place leaky ReLU, slope 0.2 (0.1 in the propagation module)."""
    return nn.LeakyReLU(slope, inplace=True)


class P3DBlock(nn.Module):
    """Pseudo-3D conv on `[B, C, T, H, W]`: 3x3 spatial (stride s) + LeakyReLU(0.2), then 3-tap temporal, dilation 2."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv3d(c_in, c_out, (1, 3, 3), (1, stride, stride), (0, 1, 1)), _lrelu())
        # Zero temporal padding of 2 keeps T: the taps reach t-2, t, t+2.
        self.conv2 = nn.Sequential(nn.Conv3d(c_out, c_out, (3, 1, 1), padding=(2, 0, 0), dilation=(2, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class Upsample2x(nn.Module):
    """Bilinear x2 (align_corners=True), then a 3x3 conv (the release's `deconv`)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


class SecondOrderAlign(nn.Module):
    """Modulated deformable 3x3 conv of the two previous states, offsets and masks predicted from a condition."""

    def __init__(self, channels: int = CHANNELS, groups: int = DEFORM_GROUPS) -> None:
        super().__init__()
        c_in = 2 * channels  # the states of steps n-1 and n-2
        self.weight = nn.Parameter(torch.empty(channels, c_in, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        bound = 1.0 / math.sqrt(c_in * 9)
        nn.init.uniform_(self.weight, -bound, bound)
        self.conv_offset = nn.Sequential(  # condition [n-1, current, n-2] -> 2 offsets + 1 mask per group and tap
            nn.Conv2d(3 * channels, channels, 3, padding=1), _lrelu(0.1),
            nn.Conv2d(channels, channels, 3, padding=1), _lrelu(0.1),
            nn.Conv2d(channels, channels, 3, padding=1), _lrelu(0.1),
            nn.Conv2d(channels, 27 * groups, 3, padding=1),
        )
        # The last conv starts at zero: no offset and masks of 0.5 until trained.
        nn.init.zeros_(self.conv_offset[-1].weight)
        nn.init.zeros_(self.conv_offset[-1].bias)

    def forward(self, states: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """`states [N, 2C, h, w]`, `cond [N, 3C, h, w]` -> aligned `[N, C, h, w]`."""
        o1, o2, logits = self.conv_offset(cond).chunk(3, dim=1)  # each [N, 9 * groups, h, w]
        offset = MAX_RESIDUE * torch.tanh(torch.cat([o1, o2], dim=1))  # [N, 18 * groups, h, w]
        return deform_conv2d(states, offset, self.weight, self.bias, padding=(1, 1), mask=torch.sigmoid(logits))


class BidirectionalPropagation(nn.Module):
    """Backward pass (t = T-1 .. 0), then forward pass fed the backward states; 1x1 fusion plus the input."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.channels = channels
        self.deform_align = nn.ModuleDict({d: SecondOrderAlign(channels) for d in ("backward_", "forward_")})
        # The backward pass mixes [current, state]; the forward pass [current, backward state, state].
        self.backbone = nn.ModuleDict({
            d: nn.Sequential(nn.Conv2d(k * channels, channels, 3, padding=1), _lrelu(0.1),
                             nn.Conv2d(channels, channels, 3, padding=1))
            for d, k in (("backward_", 2), ("forward_", 3))
        })
        self.fusion = nn.Conv2d(2 * channels, channels, 1)

    def _pass(self, x: torch.Tensor, name: str, side: Optional[list[torch.Tensor]]) -> list[torch.Tensor]:
        """States of one pass over `x [B, T, C, h, w]` (backward_: t = T-1 .. 0), returned in frame order 0..T-1."""
        align, backbone = self.deform_align[name], self.backbone[name]
        reverse = name == "backward_"
        order = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        state = x.new_zeros(x.shape[0], self.channels, *x.shape[-2:])
        states: list[torch.Tensor] = []
        for i, t in enumerate(order):
            cur = x[:, t]
            if i > 0:  # the first step has no previous state: it stays zero
                older = states[-2] if i > 1 else torch.zeros_like(state)  # second order: the state of step i-2
                state = align(torch.cat([state, older], 1), torch.cat([state, cur, older], 1))
            mix = [cur] + ([side[t]] if side is not None else []) + [state]
            state = state + backbone(torch.cat(mix, 1))
            states.append(state)
        return states[::-1] if reverse else states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x [B, T, C, h, w]` -> `[B, T, C, h, w]`."""
        t = x.shape[1]
        back = self._pass(x, "backward_", None)
        fwd = self._pass(x, "forward_", back)
        fused = [self.fusion(torch.cat([back[i], fwd[i]], 1)) for i in range(t)]
        return torch.stack(fused, 1) + x


class EdgeDetection(nn.Module):
    """Flow-edge head of ProPainter's training loss; kept so the released weights load strictly (inference skips it)."""

    def __init__(self, c_in: int = 2, c_mid: int = 16, c_out: int = 1) -> None:
        super().__init__()
        self.projection = nn.Sequential(nn.Conv2d(c_in, c_mid, 3, padding=1), _lrelu())
        self.mid_layer_1 = nn.Sequential(nn.Conv2d(c_mid, c_mid, 3, padding=1), _lrelu())
        self.mid_layer_2 = nn.Sequential(nn.Conv2d(c_mid, c_mid, 3, padding=1))
        self.out_layer = nn.Conv2d(c_mid, c_out, 1)

    def forward(self, flow: torch.Tensor) -> torch.Tensor:
        """`flow [N, 2, H, W]` -> edge probability `[N, 1, H, W]`."""
        feat = self.projection(flow)
        edge = F.leaky_relu(feat + self.mid_layer_2(self.mid_layer_1(feat)), 0.01)
        return torch.sigmoid(self.out_layer(edge))


def _p3d_stage(c_in: int, c_out: int) -> nn.Sequential:
    """P3D at stride 1, then P3D at stride 2 widening to `c_out`, each followed by LeakyReLU(0.2)."""
    return nn.Sequential(P3DBlock(c_in, c_in, 1), _lrelu(), P3DBlock(c_in, c_out, 2), _lrelu())


def _decoder(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv + LeakyReLU(0.2), then x2 upsampling conv + LeakyReLU(0.2)."""
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, padding=1), _lrelu(), Upsample2x(c_in, c_out), _lrelu())


class RecurrentFlowCompleteNet(nn.Module):
    """Masked flows `[B, T, 2, H, W]` + masks `[B, T, 1, H, W]` -> completed flows `[B, T, 2, H, W]`; H, W % 8 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.downsample = nn.Sequential(  # replicate padding here only: the input border is real flow
            nn.Conv3d(3, 32, (1, 5, 5), (1, 2, 2), (0, 2, 2), padding_mode="replicate"), _lrelu())
        self.encoder1 = _p3d_stage(32, 64)  # 1/4
        self.encoder2 = _p3d_stage(64, 128)  # 1/8
        self.mid_dilation = nn.Sequential(*[  # dilations 3, 2, 1 with padding = dilation: size kept
            m for d in (3, 2, 1)
            for m in (nn.Conv3d(128, 128, (1, 3, 3), padding=(0, d, d), dilation=(1, d, d)), _lrelu())
        ])
        self.feat_prop_module = BidirectionalPropagation(CHANNELS)
        self.decoder2 = _decoder(128, 64)  # 1/4
        self.decoder1 = _decoder(64, 32)  # 1/2
        self.upsample = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), _lrelu(), Upsample2x(32, 2))
        self.edgeDetector = EdgeDetection()

    def forward(self, masked_flows: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        b, h, w = masked_flows.shape[0], *masked_flows.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise InputError(f"RecurrentFlowCompleteNet needs H and W divisible by 8, got {h}x{w}; use complete_pair")
        x = rearrange(torch.cat([masked_flows, masks], 2), "b t c h w -> b c t h w")
        x = self.downsample(x)  # [B, 32, T, H/2, W/2]
        e1 = self.encoder1(x)  # [B, 64, T, H/4, W/4]
        mid = self.mid_dilation(self.encoder2(e1))  # [B, 128, T, H/8, W/8]
        prop = self.feat_prop_module(rearrange(mid, "b c t h w -> b t c h w"))
        d2 = self.decoder2(rearrange(prop, "b t c h w -> (b t) c h w")) + rearrange(e1, "b c t h w -> (b t) c h w")
        flow = self.upsample(self.decoder1(d2))  # [(B T), 2, H, W]
        return rearrange(flow, "(b t) c h w -> b t c h w", b=b)

    def complete(self, flows: torch.Tensor, holes: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Prediction for `flows [B, T, 2, H, W]` seen as `flows * (1 - holes)` (`holes [B, T, 1, H, W]` 0/1), any
        H and W; `reverse`: run the sequence backwards in time (the release's backward flows)."""
        b, h, w = flows.shape[0], *flows.shape[-2:]
        x = torch.cat([flows * (1 - holes), holes], 2)  # the net never sees values inside the hole
        x = x.flip(1) if reverse else x
        ph, pw = -h % STRIDE, -w % STRIDE
        if ph or pw:  # the extension: replicate to a multiple of 8, crop back below
            x = rearrange(F.pad(rearrange(x, "b t c h w -> (b t) c h w"), (0, pw, 0, ph), mode="replicate"),
                          "(b t) c h w -> b t c h w", b=b)
        pred = self(x[:, :, :2], x[:, :, 2:])[..., :h, :w]
        return pred.flip(1) if reverse else pred

    @torch.no_grad()
    def complete_pair(
        self, flows_fw: torch.Tensor, flows_bw: torch.Tensor, masks: torch.Tensor, frames: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The release's `forward_bidirect_flow` then `combine_flow`: `flows [B, F-1, 2, H, W]` pixels, `masks
        [B, F, 1, H, W]` (1 = hole, binarised at 0.5) -> completed (fw, bw); outside the holes the input bit for bit.

        Forward flows use the holes of their source frames `masks[:, :-1]`, backward flows `masks[:, 1:]` and run
        time-reversed. Eval mode, float32, on the flows' device; `frames` is accepted for the interface and unused.
        """
        if flows_fw.ndim != 5 or flows_fw.shape != flows_bw.shape or masks.shape[1] != flows_fw.shape[1] + 1:
            raise InputError(f"complete_pair needs flows [B, F-1, 2, H, W] twice and masks [B, F, 1, H, W], got "
                             f"{tuple(flows_fw.shape)}, {tuple(flows_bw.shape)} and {tuple(masks.shape)}")
        hole = masks > 0.5
        return self.complete_combined(flows_fw, hole[:, :-1]), self.complete_combined(flows_bw, hole[:, 1:], True)

    @torch.no_grad()
    def complete_combined(self, flows: torch.Tensor, holes: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """`flows [B, T, 2, H, W]` with the prediction inside `holes [B, T, 1, H, W]` (bool) and the input outside,
        bit for bit (the release's `combine_flow`); eval mode, float32, on the flows' device."""
        if flows.shape[1] == 0:
            return flows
        self.to(flows.device, torch.float32).eval()
        x = flows.float()
        pred = self.complete(x, holes.to(flows.device, torch.float32), reverse)
        return torch.where(holes.to(flows.device), pred, x).to(flows.dtype)


def weights_problem(weights: Optional[str]) -> Optional[str]:
    """Why `flow.completion_weights` cannot serve completion=propainter (one line with the fix), None when it can;
    config checks call it before anything is written, `load_propainter` finds the same and more (file contents)."""
    where = f"download recurrent_flow_completion.pth from {WEIGHTS_URL}"
    if weights is None:
        return f"flow.completion=propainter needs flow.completion_weights (the network's .pth file); {where}"
    if str(weights).lower() != "random" and not os.path.isfile(os.path.expanduser(weights)):
        return f"flow.completion_weights={weights!r} does not exist; {where}"
    return None


def load_propainter(weights: Optional[str]) -> RecurrentFlowCompleteNet:
    """The network with ProPainter's released state dict from `weights` (a plain dict, loaded strictly), or random
    weights for `weights='random'` (tests and speed only); ModelLoadError in one line otherwise."""
    problem = weights_problem(weights)
    if problem:
        raise ModelLoadError(problem)
    net = RecurrentFlowCompleteNet()
    if str(weights).lower() == "random":
        return net.eval().requires_grad_(False)
    where = f"download recurrent_flow_completion.pth from {WEIGHTS_URL}"
    try:
        state = torch.load(os.path.expanduser(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and tensor errors alike: not a usable file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"flow.completion_weights={weights!r} is not a readable torch state dict ({reason}); "
                             f"{where}") from exc
    problem = _state_problem(state, net.state_dict())
    if problem:
        raise ModelLoadError(f"flow.completion_weights={weights!r} is not ProPainter's plain state dict: {problem}; "
                             f"{where}")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def _state_problem(state: object, expected: dict[str, torch.Tensor]) -> str:
    """What keeps `state` from loading strictly into a module with `expected` (empty when nothing)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict of tensors"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and getattr(state[k], "shape", None) != expected[k].shape]
    parts = [f"{len(keys)} {what} key(s), e.g. {keys[0]!r}" for keys, what in
             ((missing, "missing"), (unexpected, "unexpected"), (shapes, "wrongly shaped")) if keys]
    return ", ".join(parts)
