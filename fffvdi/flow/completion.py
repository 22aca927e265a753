"""Completion of optical flow inside masks (holes): weight-free completers and ProPainter's learned network
(`propainter`, the FFF-VDI release's choice; `fffvdi.flow.propainter`), behind one interface.

Which pixels are holes: a flow is a field on the pixel grid of its *source* frame, so
`flows_fw[:, t]` (t -> t+1) is unreliable where frame t is masked and `flows_bw[:, t]`
(t+1 -> t) where frame t+1 is masked (ProPainter uses the same split). We do not union with
the other frame's mask: that mask lives in the other frame's geometry, and tracing
(fffvdi/flow/trace.py) never lands a point inside a hole anyway. We dilate the hole
by `dilation` pixels (default 8) because estimators smear the object's motion across its
boundary: RAFT predicts at 1/8 resolution, DIS (medium) matches 12-pixel patches. The
propainter completer does not dilate (dilation 0): the release feeds the network the masks as given.
"""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Callable, Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from fffvdi.errors import ConfigError, InputError, one_of
from fffvdi.flow.membrane import STEPS, solve_in_hole
from fffvdi.flow.propainter import load_propainter


def flow_holes(masks: torch.Tensor, backward: bool = False, dilation: int = 0) -> torch.Tensor:
    """Hole masks `[B, F-1, 1, H, W]` bool for forward (source t) or backward (source t+1) flows."""
    src = masks[:, 1:] if backward else masks[:, :-1]  # [B, F-1, 1, H, W]
    hole = src > 0.5
    if dilation > 0:
        b = hole.shape[0]
        k = 2 * dilation + 1
        flat = rearrange(hole.float(), "b f c h w -> (b f) c h w")
        # A square max filter is separable: two 1-D passes cost 2k instead of k^2 per pixel.
        flat = F.max_pool2d(flat, (1, k), stride=1, padding=(0, dilation))
        flat = F.max_pool2d(flat, (k, 1), stride=1, padding=(dilation, 0))
        hole = rearrange(flat, "(b f) c h w -> b f c h w", b=b) > 0.5
    return hole


class FlowCompleter(ABC):
    """Replaces flow values inside holes by plausible ones; values outside holes stay exactly as given."""

    from_border = True  # fills a hole from the flow around it (so motion layers at that border matter)

    def __init__(self, dilation: int = 8) -> None:
        self.dilation = int(dilation)

    def complete_flows(self, flows: torch.Tensor, masks: torch.Tensor, backward: bool = False) -> torch.Tensor:
        """`flows [B, F-1, 2, H, W]`, `masks [B, F, 1, H, W]` (1 = hole) -> completed flows, same shape."""
        if flows.ndim != 5 or masks.ndim != 5 or flows.shape[1] != masks.shape[1] - 1:
            raise InputError(
                f"complete_flows needs flows [B, F-1, 2, H, W] and masks [B, F, 1, H, W], "
                f"got {tuple(flows.shape)} and {tuple(masks.shape)}"
            )
        return self.fill(flows, flow_holes(masks, backward, self.dilation))

    def complete_pair(
        self, flows_fw: torch.Tensor, flows_bw: torch.Tensor, masks: torch.Tensor, frames: torch.Tensor | None = None,
        ignore: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Complete forward and backward flows inside the (dilated) holes of their source frames.

        `frames [B, F, 3, H, W]` in [0, 1] (hole-free, e.g. pre-filled) guide edge-aware completers; others ignore them.
        `ignore` (forward, backward; like the holes): known pixels the fill must not learn from, e.g. another motion
        layer at a fixed hole's border (`fffvdi.flow.layers.pair_layers`).
        """
        hole_fw = flow_holes(masks, False, self.dilation)
        hole_bw = flow_holes(masks, True, self.dilation)
        guide_fw = guide_bw = None
        if frames is not None:  # each flow lives on its source frame's grid
            guide_fw, guide_bw = frames[:, :-1], frames[:, 1:]
        skip_fw, skip_bw = ignore if ignore is not None else (None, None)
        return self.fill(flows_fw, hole_fw, guide_fw, skip_fw), self.fill(flows_bw, hole_bw, guide_bw, skip_bw)

    def fill(
        self, flows: torch.Tensor, holes: torch.Tensor, guide: torch.Tensor | None = None,
        ignore: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fill `flows [B, T, 2, H, W]` where `holes [B, T, 1, H, W]` is True (`guide [B, T, 3, H, W]` optional).

        `ignore` (same shape as `holes`): known pixels the fill must not learn from; they keep their own values.
        """
        b = flows.shape[0]
        flat = rearrange(flows, "b t c h w -> (b t) c h w").float()
        hole = rearrange(holes, "b t c h w -> (b t) c h w").bool()
        solve = hole if ignore is None else hole | rearrange(ignore, "b t c h w -> (b t) c h w").bool()
        if guide is None:
            out = self._fill(flat, solve)
        else:
            out = self._fill_guided(flat, solve, rearrange(guide, "b t c h w -> (b t) c h w").float())
        out = torch.where(hole, out, flat)  # outside the holes: the input, bit for bit
        return rearrange(out, "(b t) c h w -> b t c h w", b=b).to(flows.dtype)

    @abstractmethod
    def _fill(self, flows: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
        """Backend: `flows [N, 2, H, W]` float32, `holes [N, 1, H, W]` bool -> filled `[N, 2, H, W]`."""

    def _fill_guided(self, flows: torch.Tensor, holes: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Backend with guide images `[N, 3, H, W]`; completers that use no guide ignore it."""
        return self._fill(flows, holes)


def _neighbour_mean(v: torch.Tensor) -> torch.Tensor:
    """Mean of the 4-neighbourhood with replicated borders (zero normal derivative at the image edge)."""
    p = F.pad(v, (1, 1, 1, 1), mode="replicate")
    return 0.25 * (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:])


def _seed_fill(v: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Grow known values into holes ring by ring (mean of known 3x3 neighbours); zeros if nothing is known."""
    v = torch.where(known, v, torch.zeros_like(v))
    k = known.float()
    for _ in range(max(v.shape[-2:])):
        if bool((k > 0).all()):
            break
        s = F.avg_pool2d(F.pad(v * k, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        c = F.avg_pool2d(F.pad(k, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        grow = (k == 0) & (c > 0)
        v = torch.where(grow, s / c.clamp_min(1e-8), v)
        k = torch.where(grow, torch.ones_like(k), k)
    return v


class SmoothCompleter(FlowCompleter):
    """Membrane (Laplace) fill from the hole border, solved coarse-to-fine so large holes converge fast.

    Harmonic interpolation reproduces constant and linear flow fields (translation, zoom,
    rotation) exactly when the hole does not touch the image edge.
    """

    def __init__(
        self,
        iters: int = 20,
        omega: float = 1.8,
        margin: int = 16,
        min_size: int = 4,
        dilation: int = 8,
    ) -> None:
        super().__init__(dilation)
        self.iters = int(iters)
        self.omega = float(omega)
        self.margin = int(margin)
        self.min_size = int(min_size)

    def _fill(self, flows: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
        any_hole = holes.any(0)[0]  # [H, W] union over the batch
        if not bool(any_hole.any()):
            return flows
        # Solve on the holes' bounding box plus a margin: pixels farther out cannot change the solution much.
        rows, cols = any_hole.any(1).nonzero()[:, 0], any_hole.any(0).nonzero()[:, 0]
        m = self.margin
        y0, y1 = max(int(rows[0]) - m, 0), min(int(rows[-1]) + m + 1, flows.shape[-2])
        x0, x1 = max(int(cols[0]) - m, 0), min(int(cols[-1]) + m + 1, flows.shape[-1])
        out = flows.clone()
        out[..., y0:y1, x0:x1] = self._solve(flows[..., y0:y1, x0:x1], ~holes[..., y0:y1, x0:x1])
        return out

    def _solve(self, v: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Recursive multigrid-style solve: coarse solution initialises the fine Jacobi relaxation."""
        if bool(known.all()):
            return v
        h, w = v.shape[-2:]
        if min(h, w) <= self.min_size:
            v = _seed_fill(v, known)
        else:
            ph, pw = h % 2, w % 2
            vp = F.pad(torch.where(known, v, torch.zeros_like(v)), (0, pw, 0, ph), mode="replicate")
            kp = F.pad(known.float(), (0, pw, 0, ph), mode="replicate")
            kc = F.avg_pool2d(kp, 2)  # [N, 1, h/2, w/2] fraction of known pixels per coarse cell
            vc = F.avg_pool2d(vp, 2) / kc.clamp_min(1e-8)
            vc = self._solve(vc, kc > 0)
            up = F.interpolate(vc, size=(h + ph, w + pw), mode="bilinear", align_corners=False)[..., :h, :w]
            v = torch.where(known, v, up)
        # Red-black successive over-relaxation: each colour sees its neighbours' newest values.
        ys, xs = torch.meshgrid(torch.arange(h, device=v.device), torch.arange(w, device=v.device), indexing="ij")
        red = ((ys + xs) % 2 == 0)[None, None]
        free = (~known & red, ~known & ~red)
        for _ in range(self.iters):
            for f in free:
                v = torch.where(f, (1 - self.omega) * v + self.omega * _neighbour_mean(v), v)
        return v


class CV2InpaintCompleter(FlowCompleter):
    """OpenCV inpainting of each flow channel separately; CPU, per image.

    `method='ns'` (Navier-Stokes, default) or 'telea'. On a linear flow field with a 10x10
    hole we measured a mean error of 0.04 px for NS and 0.98 px for Telea (Telea's gradient
    extrapolation is coarse), so NS is the default.
    """

    _METHODS = {"ns": cv2.INPAINT_NS, "telea": cv2.INPAINT_TELEA}

    def __init__(self, radius: int = 5, method: str = "ns", dilation: int = 8) -> None:
        super().__init__(dilation)
        if method not in self._METHODS:
            raise ConfigError(f"CV2InpaintCompleter(method={method!r}) is unknown; use 'ns' or 'telea'")
        self.radius = int(radius)
        self.method = self._METHODS[method]

    def _fill(self, flows: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
        v = flows.detach().cpu().numpy().astype(np.float32)
        m = holes[:, 0].cpu().numpy().astype(np.uint8)
        out = v.copy()
        for i in range(v.shape[0]):
            if not m[i].any():
                continue
            for c in range(v.shape[1]):
                out[i, c] = cv2.inpaint(np.ascontiguousarray(v[i, c]), m[i], self.radius, self.method)
        return torch.from_numpy(out).to(flows.device)


class EdgeAwareCompleter(FlowCompleter):
    """Weighted membrane fill solved exactly (scipy sparse LU): neighbours of similar colour in the guide
    frame are tied strongly, across guide edges weakly (weight `exp(-|dI|^2 / (2 sigma^2))`), so the
    completed flow may change where the (pre-filled) frame has an edge. Without a guide: plain Laplace."""

    def __init__(self, sigma: float = 0.1, floor: float = 1e-3, dilation: int = 8) -> None:
        super().__init__(dilation)
        self.sigma, self.floor = float(sigma), float(floor)

    def _fill(self, flows: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
        return self._fill_guided(flows, holes, None)

    def _fill_guided(self, flows: torch.Tensor, holes: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
        out = flows.clone()
        for i in range(flows.shape[0]):
            hole = holes[i, 0].cpu().numpy()
            if not hole.any():
                continue
            weights = None
            if guide is not None:
                g = guide[i].cpu().numpy().astype(np.float64)  # [3, H, W]
                weights = np.ones((len(STEPS),) + hole.shape)
                for s, (dy, dx) in enumerate(STEPS):  # colour difference to each neighbour (edge replicated)
                    nb = np.roll(g, (-dy, -dx), axis=(1, 2))
                    weights[s] = np.exp(-((g - nb) ** 2).sum(0) / (2 * self.sigma**2)) + self.floor
            v = flows[i].cpu().numpy().transpose(1, 2, 0)  # [H, W, 2]
            solved = solve_in_hole(v, hole, weights)
            out[i] = torch.from_numpy(solved.transpose(2, 0, 1).astype(np.float32)).to(flows.device)
        return out


class ProPainterCompleter(FlowCompleter):
    """ProPainter's learned recurrent completion (`fffvdi.flow.propainter`, the FFF-VDI release's choice): each
    direction is completed as a whole sequence, inside the holes as given (no dilation), from `weights`."""

    from_border = False  # completes from the whole sequence

    def __init__(self, weights: Optional[str] = None) -> None:
        super().__init__(dilation=0)  # the network was trained on the masks themselves
        self.net = load_propainter(weights)

    def complete_pair(
        self, flows_fw: torch.Tensor, flows_bw: torch.Tensor, masks: torch.Tensor, frames: torch.Tensor | None = None,
        ignore: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The release's bidirectional completion and combination; `frames` and `ignore` are unused."""
        return self.net.complete_pair(flows_fw, flows_bw, masks)

    def complete_flows(self, flows: torch.Tensor, masks: torch.Tensor, backward: bool = False) -> torch.Tensor:
        """One direction of `complete_pair`: backward flows run time-reversed, as the release does."""
        if flows.ndim != 5 or masks.ndim != 5 or flows.shape[1] != masks.shape[1] - 1:
            raise InputError(f"complete_flows needs flows [B, F-1, 2, H, W] and masks [B, F, 1, H, W], "
                             f"got {tuple(flows.shape)} and {tuple(masks.shape)}")
        return self.net.complete_combined(flows, flow_holes(masks, backward), reverse=backward)

    def _fill(self, flows: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
        """`fill` hands over images without their clip: each is completed as a one-frame sequence."""
        return self.net.complete_combined(flows[:, None], holes[:, None])[:, 0]


# flow.completion -> completer class (keyword arguments go to its constructor)
FLOW_COMPLETERS: dict[str, Callable[..., FlowCompleter]] = {
    "smooth": SmoothCompleter,  # default, torch
    "edge_aware": EdgeAwareCompleter,  # guided, scipy
    "cv2_inpaint": CV2InpaintCompleter,  # OpenCV Navier-Stokes
    "telea": functools.partial(CV2InpaintCompleter, method="telea"),
    "propainter": ProPainterCompleter,  # learned, needs weights= (flow.completion_weights)
}


def build_flow_completer(name: str = "smooth", **kwargs) -> FlowCompleter:
    """Factory over `FLOW_COMPLETERS`: 'smooth' (default) | 'edge_aware' | 'cv2_inpaint' | 'telea' | 'propainter'."""
    key = name.lower()
    if key not in FLOW_COMPLETERS:
        raise ConfigError(f"flow.completion={name!r} is unknown; use {one_of(FLOW_COMPLETERS)}")
    return FLOW_COMPLETERS[key](**kwargs)
