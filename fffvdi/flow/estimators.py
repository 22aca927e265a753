"""Optical-flow estimators behind one interface: OpenCV DIS (no weights) and torchvision RAFT.

Every estimator takes `frames [B, F, 3, H, W]` float RGB in [0, 1] and returns
`(flows_fw, flows_bw)`, each `[B, F-1, 2, H, W]` float32 in pixels on the frames' device,
with the conventions of `fffvdi.flow.warp` (channel 0 = x; `flows_fw[:, t]` maps t -> t+1,
`flows_bw[:, t]` maps t+1 -> t).
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
from torchvision.models import optical_flow as of

from fffvdi.errors import ConfigError, InputError, ModelLoadError, one_of
from fffvdi.flow.raft_weights import load_raft_weights


def _check_frames(frames: torch.Tensor) -> None:
    """Raise InputError unless `frames` is `[B, F>=2, 3, H, W]`."""
    if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[1] < 2:
        raise InputError(
            f"flow estimation needs frames shaped [B, F>=2, 3, H, W] in [0, 1], got {tuple(frames.shape)}; "
            "pass at least two RGB frames"
        )


class FlowEstimator(ABC):
    """Estimates forward and backward flow between neighbouring frames."""

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`frames [B, F, 3, H, W]` in [0, 1] -> `(flows_fw, flows_bw)`, each `[B, F-1, 2, H, W]` float32."""
        _check_frames(frames)
        return self.estimate(frames)

    @abstractmethod
    def estimate(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backend-specific estimation; `frames` already validated."""


class DISFlow(FlowEstimator):
    """OpenCV Dense Inverse Search flow on grayscale uint8 frames; needs no weights (offline default)."""

    _PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}

    def __init__(self, preset: str = "medium") -> None:
        if preset not in self._PRESETS:
            raise ConfigError(f"DISFlow(preset={preset!r}) is unknown; use one of {sorted(self._PRESETS)}")
        self.preset = preset

    def estimate(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run DIS pairwise in both directions on CPU."""
        dis = cv2.DISOpticalFlow_create(self._PRESETS[self.preset])
        rgb = (frames.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu()
        gray = rearrange(rgb, "b f c h w -> b f h w c").numpy()
        b, f = gray.shape[:2]
        fw = np.empty((b, f - 1, 2) + gray.shape[2:4], np.float32)
        bw = np.empty_like(fw)
        for i in range(b):
            g = [cv2.cvtColor(np.ascontiguousarray(gray[i, t]), cv2.COLOR_RGB2GRAY) for t in range(f)]
            for t in range(f - 1):
                # DIS returns flow with prev(p) ~ next(p + flow(p)): the fffvdi convention.
                fw[i, t] = dis.calc(g[t], g[t + 1], None).transpose(2, 0, 1)
                bw[i, t] = dis.calc(g[t + 1], g[t], None).transpose(2, 0, 1)
        return torch.from_numpy(fw).to(frames.device), torch.from_numpy(bw).to(frames.device)


class RAFTFlow(FlowEstimator):
    """torchvision RAFT (large or small); weights from a local file (torchvision's or the original RAFT layout),
    torchvision's hub, or random (tests)."""

    def __init__(
        self,
        variant: str = "large",
        weights_path: Optional[str] = None,
        iters: int = 20,
        device: Optional[str | torch.device] = None,  # default: run where the frames are
        random_init: bool = False,
        pair_batch: int = 8,
    ) -> None:
        if variant not in ("large", "small"):
            raise ConfigError(f"RAFT variant {variant!r} is unknown; use flow.method=raft_large or raft_small")
        builder = of.raft_large if variant == "large" else of.raft_small
        self.model = builder(weights=None, progress=False)
        if random_init or (isinstance(weights_path, str) and weights_path.lower() in ("none", "random")):
            pass  # random weights: only meaningful for tests of shapes and plumbing
        elif weights_path:
            load_raft_weights(self.model, weights_path, variant)
        else:
            enum = of.Raft_Large_Weights.DEFAULT if variant == "large" else of.Raft_Small_Weights.DEFAULT
            try:
                state = enum.get_state_dict(progress=False)
            except Exception as exc:  # offline, proxy, broken cache: all mean "give us a local file"
                raise ModelLoadError(
                    f"could not download RAFT-{variant} weights ({type(exc).__name__}); "
                    f"set flow.raft_weights to a local .pth state dict (from {enum.url})"
                ) from exc
            self.model.load_state_dict(state)
        self.device = torch.device(device) if device is not None else None  # None: the frames' device
        self.model.eval().requires_grad_(False)
        self.iters = int(iters)
        self.pair_batch = max(1, int(pair_batch))

    @torch.no_grad()
    def _pairs(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Flow a -> b for image pairs `[N, 3, H, W]` in [0, 1], run in chunks to bound memory."""
        n, _, h, w = a.shape
        device = self.device or a.device
        self.model.to(device)
        # RAFT needs sides divisible by 8 and at least 128 (its 4-level correlation pyramid at 1/8).
        ph, pw = max(h + (-h) % 8, 128) - h, max(w + (-w) % 8, 128) - w
        out = []
        for s in range(0, n, self.pair_batch):
            x = torch.cat([a[s : s + self.pair_batch], b[s : s + self.pair_batch]]).to(device).float()
            x = F.pad(x * 2.0 - 1.0, (0, pw, 0, ph), mode="replicate")  # RAFT expects [-1, 1]
            x1, x2 = x.chunk(2)
            flow = self.model(x1.contiguous(), x2.contiguous(), num_flow_updates=self.iters)[-1]
            out.append(flow[:, :, :h, :w].float())
        return torch.cat(out)

    def estimate(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run RAFT on all neighbouring pairs, forward and backward."""
        b = frames.shape[0]
        src = rearrange(frames[:, :-1], "b f c h w -> (b f) c h w")
        dst = rearrange(frames[:, 1:], "b f c h w -> (b f) c h w")
        fw = self._pairs(src, dst)
        bw = self._pairs(dst, src)
        split = lambda x: rearrange(x, "(b f) c h w -> b f c h w", b=b).to(frames.device)  # noqa: E731
        return split(fw), split(bw)


# flow.method -> estimator class (keyword arguments go to its constructor)
FLOW_ESTIMATORS: dict[str, Callable[..., FlowEstimator]] = {
    "dis": DISFlow,
    "raft_large": functools.partial(RAFTFlow, variant="large"),
    "raft_small": functools.partial(RAFTFlow, variant="small"),
}


def build_flow_estimator(name: str, **kwargs) -> FlowEstimator:
    """Factory over `FLOW_ESTIMATORS` ('dis' | 'raft_large' | 'raft_small'); kwargs go to the estimator."""
    key = name.lower()
    if key not in FLOW_ESTIMATORS:
        raise ConfigError(f"flow.method={name!r} is unknown; use {one_of(FLOW_ESTIMATORS)}")
    return FLOW_ESTIMATORS[key](**kwargs)

