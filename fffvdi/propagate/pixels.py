"""Pixel propagation by trajectory tracing: each hole pixel read once from the nearest frames that show it.

Every hole pixel of frame t is traced into the future and into the past (`trace`), the frame
it lands in is read once (bilinear over visible pixels), and the two candidates are combined:
`nearest` takes the one fewer frames away (their mean on a tie), `weighted` mixes both with
weights 1/distance. Where both directions landed but read clearly different content (`agree`), at
least one of them followed a wrong flow and nothing tells which: the pixel is left to the spatial
fill. `poisson_blend` optionally rebuilds the hole in the gradient domain (FGVC's idea): each
pixel's gradients are read in its own source frame, and the hole is solved to match them and the
known border, so seams between sources and lighting offsets vanish.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from fffvdi.errors import ConfigError
from fffvdi.flow.membrane import STEPS, solve_in_hole
from fffvdi.flow.trace import FrameRecord, Landing, read_landings, records_from_clip, trace

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
    max_jump: Optional[float] = None,
    agree: Optional[float] = None,
) -> tuple[np.ndarray, np.ndarray, Landing]:
    """Propagated values `[N, C]` at integer points `(ys, xs)` of frame `t`, `ok [N]` where any frame showed
    them, and the landing each was read at in the nearest such frame (frame -1 where none); `max_jump`: `trace`;
    `agree`: a point whose two landings differ by more than this (mean over channels, the values' units) is not ok."""
    vals, oks, partial, dists, landings = [], [], [], [], []
    for step in (+1, -1):
        y0, x0 = ys.astype(np.float64), xs.astype(np.float64)
        landing = trace(records, size, t, y0, x0, step, radius, fb_check, "bilinear", max_jump)
        v, ok = read_landings(records, landing)
        vals.append(v)
        oks.append(ok & landing.found)
        partial.append(landing.partial)
        dists.append(np.abs(landing.frame - t))
        landings.append(landing)
    # A partial landing (read next to the hole's edge, one-sided) only counts where no direction has a clean one.
    clean = [ok & ~p for ok, p in zip(oks, partial)]
    use_clean = np.logical_or.reduce(clean)
    oks = [np.where(use_clean, c, ok) for c, ok in zip(clean, oks)]
    if agree is not None:
        split = oks[0] & oks[1] & (np.abs(vals[0] - vals[1]).mean(-1) > agree)
        oks = [ok & ~split for ok in oks]
    out, ok = combine_candidates(vals, oks, dists, combine)
    d = np.stack([np.where(o, dist, np.iinfo(np.int64).max) for o, dist in zip(oks, dists)])  # [2, N]
    pick, n = d.argmin(0), np.arange(len(ok))  # the nearer direction (the future on a tie)
    chosen = Landing(
        np.where(ok, np.stack([la.frame for la in landings])[pick, n], -1),
        np.stack([la.y for la in landings])[pick, n], np.stack([la.x for la in landings])[pick, n],
    )
    return out, ok, chosen


def source_gradients(records: Mapping[int, FrameRecord], chosen: Landing) -> np.ndarray:
    """`[N, 4, C]` differences `I(q) - I(q + step)` read in each point's own source frame (NaN where not visible)."""
    c = next(r.values.shape[-1] for r in records.values() if r.values is not None)
    out = np.full((len(chosen.frame), len(STEPS), c), np.nan)
    found = chosen.found
    centre, ok0 = read_landings(records, chosen)
    for s, (dy, dx) in enumerate(STEPS):
        moved = Landing(chosen.frame, chosen.y + dy, chosen.x + dx)
        v, ok = read_landings(records, moved)
        good = found & ok0 & ok
        out[good, s] = centre[good] - v[good]
    return out


def poisson_blend(image: np.ndarray, hole: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Gradient-domain fill of `hole` in `image [h, w, C]` (FGVC's seam removal), solved exactly.

    `grads [h, w, 4, C]` are differences `I(p) - I(p + step)` (`STEPS` order) read in each pixel's own
    source frame, NaN where unknown. The output keeps those gradients (the mean of the two estimates a
    neighbour pair has; zero where it has none) and meets the known pixels around the hole, so seams
    between source frames and colour offsets between frames (exposure, lighting) disappear.
    """
    guide = np.zeros((len(STEPS),) + image.shape)
    for s, (dy, dx) in enumerate(STEPS):
        mine = grads[:, :, s]  # estimate from p's source frame
        theirs = -np.roll(grads[:, :, STEPS.index((-dy, -dx))], (-dy, -dx), axis=(0, 1))  # from p + step's
        pair = np.stack([mine, theirs])
        have = np.isfinite(pair)
        guide[s] = np.where(have, pair, 0).sum(0) / np.maximum(have.sum(0), 1)
    return solve_in_hole(image, hole, guide=guide)


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
    sources: Optional[np.ndarray] = None,
    agree: Optional[float] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill `frames [F, H, W, C]` float inside `masks [F, H, W]` with given flows `[F-1, 2, H, W]` (in memory).

    Returns `(filled [F, H, W, C] float64, unfilled [F, H, W] bool)`; outside the masks the input is
    kept. `targets` limits the filling to those frames (default: all); `sources [F, H, W]` is where no frame may
    be read (default: the masks; `PropagateOptions.source_erode`); `agree`: `fill_points`.
    """
    f, h, w = masks.shape
    hole = masks > 0.5
    unread = hole if sources is None else sources > 0.5
    values = np.where(unread[..., None], 0.0, frames).astype(np.float32)  # the hole's content never leaks
    records = records_from_clip(unread, flows_fw, flows_bw, values, estimated)
    out = values.astype(np.float64)
    unfilled = hole.copy()
    for t in range(f) if targets is None else targets:
        ys, xs = np.nonzero(hole[t])
        if ys.size == 0:
            continue
        v, ok, _ = fill_points(records, (h, w), t, ys, xs, f - 1 if radius is None else radius, combine, fb_check,
                                agree=agree)
        out[t, ys[ok], xs[ok]] = v[ok]
        unfilled[t, ys[ok], xs[ok]] = False
    return out, unfilled
