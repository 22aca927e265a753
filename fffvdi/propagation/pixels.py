"""Pixel propagation by trajectory tracing: each hole pixel read once from the nearest frames that show it.

Every hole pixel of frame t is traced into the future and into the past (`trace`), the frame
it lands in is read once (bilinear over visible pixels), and the two candidates are combined:
`nearest` takes the one fewer frames away (their mean on a tie), `weighted` mixes both with
weights 1/distance. `blend_membrane` optionally removes the seam between propagated and known
pixels in the gradient domain (FGVC's idea): the mismatch on a one-pixel ring around the hole is
spread harmonically over the hole, so propagated gradients are kept and the border matches.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from fffvdi.errors import ConfigError
from fffvdi.flow.completion import SmoothCompleter
from fffvdi.propagation.trace import FrameRecord, read_landings, records_from_clip, trace

COMBINE = ("nearest", "weighted")


def combine_candidates(
    vals: list[np.ndarray], oks: list[np.ndarray], dists: list[np.ndarray], mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mix per-direction candidates `[N, C]` (valid where `oks`, `dists` frames away): `(values, ok)`."""
    if mode not in COMBINE:
        raise ConfigError(f"propagate.combine={mode!r} is unknown; use one of {', '.join(COMBINE)}")
    d = np.stack([np.where(ok, dist, np.inf) for ok, dist in zip(oks, dists)]).astype(np.float64)  # [D, N]
    if mode == "nearest":
        w = (d == d.min(0, keepdims=True)) & np.isfinite(d)
    else:
        w = np.where(np.isfinite(d), 1.0 / np.maximum(d, 1.0), 0.0)
    w = w.astype(np.float64)
    total = w.sum(0)
    ok = total > 0
    out = (np.stack(vals) * w[..., None]).sum(0) / np.maximum(total, 1e-12)[:, None]
    return out, ok


def fill_points(
    records: Mapping[int, FrameRecord],
    size: tuple[int, int],
    t: int,
    ys: np.ndarray,
    xs: np.ndarray,
    radius: int,
    combine: str = "nearest",
    fb_check: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Propagated values `[N, C]` at integer points `(ys, xs)` of frame `t` and `ok [N]` where any frame showed them."""
    vals, oks, partial, dists = [], [], [], []
    for step in (+1, -1):
        landing = trace(records, size, t, ys.astype(np.float64), xs.astype(np.float64), step, radius, fb_check, "bilinear")
        v, ok = read_landings(records, landing)
        vals.append(v)
        oks.append(ok & landing.found)
        partial.append(landing.partial)
        dists.append(np.abs(landing.frame - t))
    # A partial landing (read next to the hole's edge, one-sided) only counts where no direction has a clean one.
    clean = [ok & ~p for ok, p in zip(oks, partial)]
    use_clean = np.logical_or.reduce(clean)
    oks = [np.where(use_clean, c, ok) for c, ok in zip(clean, oks)]
    return combine_candidates(vals, oks, dists, combine)


def ring_of(hole: np.ndarray) -> np.ndarray:
    """Pixels 8-adjacent to `hole [h, w]` but outside it: the border a 4-neighbour solve needs."""
    p = np.pad(hole, 1)
    grown = np.zeros_like(hole)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            grown |= p[dy : dy + hole.shape[0], dx : dx + hole.shape[1]]
    return grown & ~hole


def blend_membrane(image: np.ndarray, hole: np.ndarray, ring_prop: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Shift `image [h, w, C]` inside `hole` by the harmonic interpolation of `image - ring_prop` on `ring`.

    `ring_prop [h, w, C]` holds the propagated values at `ring` pixels (NaN where none): there the
    mismatch with the known image is measured; elsewhere on the ring it is left free.
    """
    known_ring = ring & np.isfinite(ring_prop).all(-1)
    diff = np.where(known_ring[..., None], image - np.nan_to_num(ring_prop), 0.0)
    unknown = hole | (ring & ~known_ring)
    solver = SmoothCompleter(dilation=0)
    d = solver.fill(
        torch.from_numpy(diff.transpose(2, 0, 1)[None, None].astype(np.float32)),
        torch.from_numpy(unknown[None, None, None]),
    )[0, 0].numpy().transpose(1, 2, 0)
    return np.where(hole[..., None], image + d, image)


def propagate_clip(
    frames: np.ndarray,
    masks: np.ndarray,
    flows_fw: np.ndarray,
    flows_bw: np.ndarray,
    estimated: Optional[np.ndarray] = None,
    radius: Optional[int] = None,
    combine: str = "nearest",
    fb_check: bool = True,
    targets: Optional[Sequence[int]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill `frames [F, H, W, C]` float inside `masks [F, H, W]` with given flows `[F-1, 2, H, W]` (in memory).

    Returns `(filled [F, H, W, C] float64, unfilled [F, H, W] bool)`; outside the masks the input is
    kept. `targets` limits the filling to those frames (default: all).
    """
    f, h, w = masks.shape
    hole = masks > 0.5
    values = np.where(hole[..., None], 0.0, frames).astype(np.float32)  # the hole's content never leaks
    records = records_from_clip(hole, flows_fw, flows_bw, values, estimated)
    out = values.astype(np.float64)
    unfilled = hole.copy()
    for t in range(f) if targets is None else targets:
        ys, xs = np.nonzero(hole[t])
        if ys.size == 0:
            continue
        v, ok = fill_points(records, (h, w), t, ys, xs, f - 1 if radius is None else radius, combine, fb_check)
        out[t, ys[ok], xs[ok]] = v[ok]
        unfilled[t, ys[ok], xs[ok]] = False
    return out, unfilled
