"""Optional LPIPS (Zhang et al. 2018) via the `lpips` package; absent package or weights -> ModelLoadError.

`lpips` ships its linear-layer weights, but its AlexNet/VGG/SqueezeNet trunk comes from
torchvision's ImageNet checkpoint, downloaded into the torch hub cache on first use. Offline,
`load_lpips` checks the cache first and raises ModelLoadError instead of trying the network, so a
harness can skip the LPIPS column with a warning.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torchvision.models as tvm
from einops import rearrange

from fffvdi.errors import InputError, ModelLoadError

# lpips net name -> torchvision weights enum holding the trunk checkpoint URL.
_TRUNK_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def _trunk_checkpoint(net: str) -> Path:
    """Where torchvision caches the ImageNet trunk that `lpips.LPIPS(net=net)` needs."""
    url = getattr(tvm, _TRUNK_WEIGHTS[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_lpips(net: str = "alex", device: str | torch.device = "cpu") -> torch.nn.Module:
    """`lpips.LPIPS(net=net)` in eval mode on `device`, or ModelLoadError if the package or weights are missing."""
    if net not in _TRUNK_WEIGHTS:
        raise InputError(f"unknown LPIPS net {net!r}; use one of {sorted(_TRUNK_WEIGHTS)}")
    try:
        import lpips
    except ImportError as e:
        raise ModelLoadError("LPIPS needs the optional `lpips` package; run `pip install lpips` or skip LPIPS") from e
    ckpt = _trunk_checkpoint(net)
    if not ckpt.is_file():
        raise ModelLoadError(
            f"LPIPS({net}) needs torchvision's ImageNet trunk at {ckpt} (not downloadable offline); copy it there or skip LPIPS"
        )
    try:
        model = lpips.LPIPS(net=net, verbose=False)
    except Exception as e:  # corrupt cache file or a failed download inside torchvision
        raise ModelLoadError(f"LPIPS({net}) failed to load: {type(e).__name__}: {e}") from e
    return model.to(device).eval()


@torch.no_grad()
def lpips_distances(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    gt_frames: Sequence[np.ndarray] | np.ndarray,
    pred_frames: Sequence[np.ndarray] | np.ndarray,
    batch_size: int = 8,
) -> list[float]:
    """Per-frame LPIPS between uint8 RGB videos `[F, H, W, 3]` (inputs scaled to [-1, 1] as lpips expects)."""
    gt, pred = np.asarray(gt_frames), np.asarray(pred_frames)
    if gt.shape != pred.shape or gt.ndim != 4 or gt.shape[-1] != 3:
        raise InputError(f"LPIPS needs two videos [F, H, W, 3] of equal shape, got {gt.shape} and {pred.shape}")
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    device = params[0].device if params else torch.device("cpu")
    out: list[float] = []
    for s in range(0, gt.shape[0], batch_size):
        a, b = (
            rearrange(torch.from_numpy(np.ascontiguousarray(v[s : s + batch_size])).float(), "f h w c -> f c h w")
            .div(127.5)
            .sub(1.0)
            .to(device)
            for v in (gt, pred)
        )
        out.extend(model(a, b).reshape(-1).double().cpu().tolist())  # lpips returns [N, 1, 1, 1]
    return out
