"""Trajectory tracing: follow each hole position along composed optical flow until it is visible.

A point p of frame t's hole steps k -> k+1 (or k -> k-1) by the flow sampled bilinearly at its
current *float* position, until the nearest pixel of its new position lies outside that frame's
hole (the content is visible there), it leaves the image, or `radius` steps are used up. The
caller reads the frame it landed in once: bilinearly from visible pixels (images) or at the
position rounded once (noise). Warping the already-filled previous frame step by step instead
either rounds sub-pixel motion away at every step (nearest) or blurs a little more at every
step (bilinear); tracing does neither.

Occlusion check: where the landing pixel's own flow back was *estimated* (outside that frame's
completed region), the step must agree with it (ProPainter's forward-backward test), else the
content is occluded there and the trajectory ends without a source. The same holds for a
partial landing (nearest pixel visible, a bilinear corner still hidden): an occluded one is no
fallback. Inside completed regions both flows are completions that need not agree, so they are
never used to reject.

Frames are held as `FrameRecord` crops: only the region that trajectories can visit or land
in, so memory follows the hole area, not the frame size. Coordinates are full-frame pixels,
(y, x) arrays; flows are (x, y) channels as everywhere in fffvdi.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

FB_ALPHA, FB_BETA = 0.01, 0.5  # forward-backward tolerance |f + b|^2 < alpha (|f|^2 + |b|^2) + beta


@dataclass
class FrameRecord:
    """One frame inside the crop `[top:top+h, left:left+w]`; outside the crop the frame counts as visible."""

    top: int
    left: int
    hole: np.ndarray  # bool [h, w]: masked (unknown) pixels
    estimated: np.ndarray  # bool [h, w]: where this frame's flows are estimated (False where completed)
    flow_next: Optional[np.ndarray]  # float32 [2, h, w]: flow to frame k+1 on this frame's grid; None at the end
    flow_prev: Optional[np.ndarray]  # float32 [2, h, w]: flow to frame k-1; None at the start
    values: Optional[np.ndarray] = None  # [h, w, C]: what a landing reads (pixels, noise); hole entries unused
    trusted_next: Optional[np.ndarray] = None  # bool [h, w]: where flow_next may be followed (None: everywhere)
    trusted_prev: Optional[np.ndarray] = None  # bool [h, w]: the same for flow_prev
    other: Optional[np.ndarray] = None  # bool [h, w]: known pixels of another motion layer than the fixed hole they
    #   border (fffvdi.flow.layers): a trajectory that lands there is occluded (None: none)

    def flow(self, step: int) -> Optional[np.ndarray]:
        """The flow that moves a point one frame in the direction of `step` (+1 or -1)."""
        return self.flow_next if step > 0 else self.flow_prev

    def trusted(self, step: int) -> Optional[np.ndarray]:
        """Where the flow in the direction of `step` may be followed; None: everywhere."""
        return self.trusted_next if step > 0 else self.trusted_prev

    @property
    def shape(self) -> tuple[int, int]:
        return self.hole.shape


@dataclass
class Landing:
    """Where each traced point becomes visible: source frame (-1 = none) and float position."""

    frame: np.ndarray  # int64 [N]
    y: np.ndarray  # float64 [N]
    x: np.ndarray  # float64 [N]
    partial: Optional[np.ndarray] = None  # bool [N]: landed with some bilinear corners still hidden

    @property
    def found(self) -> np.ndarray:
        return self.frame >= 0


def round_half_up(v: np.ndarray) -> np.ndarray:
    """Nearest integer with halves rounded up (one rule for every rounding in tracing)."""
    return np.floor(v + 0.5).astype(np.int64)


def lookup(rec: FrameRecord, grid: np.ndarray, iy: np.ndarray, ix: np.ndarray, outside: bool) -> np.ndarray:
    """`grid [h, w]` bool of `rec` at integer full-frame positions; `outside` where the crop does not reach."""
    h, w = rec.shape
    ly, lx = iy - rec.top, ix - rec.left
    ok = (ly >= 0) & (ly < h) & (lx >= 0) & (lx < w)
    out = np.full(iy.shape, outside, dtype=bool)
    out[ok] = grid[ly[ok], lx[ok]]
    return out


def corners(rec: FrameRecord, y: np.ndarray, x: np.ndarray):
    """Bilinear corners of float positions in crop coordinates: flat indices [4, N], weights [4, N], in-crop [4, N]."""
    h, w = rec.shape
    ly, lx = y - rec.top, x - rec.left
    y0, x0 = np.floor(ly).astype(np.int64), np.floor(lx).astype(np.int64)
    fy, fx = ly - y0, lx - x0
    ys = np.stack([y0, y0, y0 + 1, y0 + 1])
    xs = np.stack([x0, x0 + 1, x0, x0 + 1])
    wts = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    flat = np.clip(ys, 0, h - 1) * w + np.clip(xs, 0, w - 1)
    return flat, wts, inside


def _corner_in_hole(rec: FrameRecord, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """True where any stored bilinear corner of a float position is a hole pixel."""
    flat, _, inside = corners(rec, y, x)
    return (inside & rec.hole.reshape(-1)[flat]).any(0)


def sample_flow(rec: FrameRecord, flow: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear (u, v) of `flow [2, h, w]` at float positions (clamped to the crop)."""
    flat, wts, _ = corners(rec, y, x)
    f = flow.reshape(2, -1)
    return (f[0][flat] * wts).sum(0), (f[1][flat] * wts).sum(0)


def trace(
    records: Mapping[int, FrameRecord],
    size: tuple[int, int],
    t: int,
    ys: np.ndarray,
    xs: np.ndarray,
    step: int,
    radius: int,
    fb_check: bool = True,
    support: str = "nearest",
    max_jump: Optional[float] = None,
) -> Landing:
    """Trace points `(ys, xs)` of frame `t` in direction `step` (+1 future, -1 past) for at most `radius` frames.

    `support` is what must be visible for a landing: 'nearest' (the rounded pixel, for reads
    rounded once) or 'bilinear' (all four corners, for interpolated reads; a point whose nearest
    pixel is visible but not all corners keeps going, with that first partial landing as fallback).
    `max_jump` (pixels/frame, None: off) ends a trajectory without a source where the flow it follows changes by
    more than `max_jump + speed / 2` from one step to the next (`speed`: its previous step's length): real content
    changes speed gradually, but a point of the hole at rest that a passing object's completed flow picks up (or
    drops) jumps, and would land on that object instead of what the hole hides.
    """
    height, width = size
    n = len(ys)
    out = Landing(np.full(n, -1, np.int64), np.zeros(n), np.zeros(n), np.zeros(n, bool))
    fallback = out.partial  # True while a point holds only a partial landing
    idx = np.arange(n)
    y, x = np.asarray(ys, np.float64), np.asarray(xs, np.float64)
    k = t
    last = None if max_jump is None else np.zeros((n, 2))  # (u, v) of each point's previous step
    for i in range(max(int(radius), 0)):
        rec, nxt = records.get(k), records.get(k + step)
        if idx.size == 0 or rec is None or nxt is None or rec.flow(step) is None:
            break
        if rec.trusted(step) is not None:  # a distrusted completed flow: the trajectory ends here without a source
            keep = lookup(rec, rec.trusted(step), round_half_up(y), round_half_up(x), outside=True)
            idx, y, x = idx[keep], y[keep], x[keep]
        u, v = sample_flow(rec, rec.flow(step), y, x)
        if last is not None:
            if i:
                pu, pv = last[idx, 0], last[idx, 1]
                smooth = np.hypot(u - pu, v - pv) <= max_jump + 0.5 * np.hypot(pu, pv)
                idx, y, x, u, v = idx[smooth], y[smooth], x[smooth], u[smooth], v[smooth]
            last[idx, 0], last[idx, 1] = u, v
        y2, x2 = y + v, x + u
        inside = (y2 >= 0) & (y2 <= height - 1) & (x2 >= 0) & (x2 <= width - 1)  # else it left the view
        idx, y2, x2, u, v = idx[inside], y2[inside], x2[inside], u[inside], v[inside]
        iy, ix = round_half_up(y2), round_half_up(x2)
        hidden = lookup(nxt, nxt.hole, iy, ix, outside=False)
        land = ~hidden
        occluded = np.zeros_like(land)
        if fb_check and nxt.flow(-step) is not None:  # tested before the partial split: partial landings too
            check = np.flatnonzero(land & lookup(nxt, nxt.estimated, iy, ix, outside=False))
            if check.size:
                bu, bv = sample_flow(nxt, nxt.flow(-step), y2[check], x2[check])
                fu, fv = u[check], v[check]
                err = (fu + bu) ** 2 + (fv + bv) ** 2
                bound = FB_ALPHA * (fu**2 + fv**2 + bu**2 + bv**2) + FB_BETA
                occluded[check[err >= bound]] = True
        if nxt.other is not None:  # it moved with the hole's layer and lands on a passer in front of that layer
            occluded |= land & lookup(nxt, nxt.other, iy, ix, outside=False)
        if support == "bilinear":
            partial = land & ~occluded & _corner_in_hole(nxt, y2, x2)
            first = partial & (out.frame[idx] < 0) & ~fallback[idx]
            fallback[idx[first]] = True
            out.frame[idx[first]] = k + step
            out.y[idx[first]], out.x[idx[first]] = y2[first], x2[first]
            land, hidden = land & ~partial, hidden | partial
        land &= ~occluded  # occluded: ends here without a source
        out.frame[idx[land]] = k + step
        out.y[idx[land]], out.x[idx[land]] = y2[land], x2[land]
        fallback[idx[land]] = False
        idx, y, x = idx[hidden], y2[hidden], x2[hidden]
        k += step
    return out


def read_bilinear(rec: FrameRecord, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values `[N, C]` at float positions from visible pixels only (weights renormalised); `ok [N]` where any was."""
    flat, wts, inside = corners(rec, y, x)
    usable = inside & ~rec.hole.reshape(-1)[flat]
    wts = np.where(usable, wts, 0.0)
    total = wts.sum(0)
    vals = rec.values.reshape(-1, rec.values.shape[-1])[flat].astype(np.float64)  # [4, N, C]
    ok = total > 1e-6
    out = (vals * wts[..., None]).sum(0) / np.maximum(total, 1e-6)[:, None]
    return out, ok


def read_nearest(rec: FrameRecord, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values `[N, C]` at the positions rounded once; `ok [N]` where that pixel is visible and stored."""
    iy, ix = round_half_up(y), round_half_up(x)
    h, w = rec.shape
    ly, lx = iy - rec.top, ix - rec.left
    ok = (ly >= 0) & (ly < h) & (lx >= 0) & (lx < w)
    ok[ok] = ~rec.hole[ly[ok], lx[ok]]
    out = np.zeros((len(iy), rec.values.shape[-1]), rec.values.dtype)
    out[ok] = rec.values[ly[ok], lx[ok]]
    return out, ok


def read_landings(
    records: Mapping[int, FrameRecord], landing: Landing, mode: str = "bilinear"
) -> tuple[np.ndarray, np.ndarray]:
    """Read each landed point's value once in its source frame: `(values [N, C] float64, ok [N] bool)`."""
    reader = read_bilinear if mode == "bilinear" else read_nearest
    found = landing.found
    channels = next(r.values.shape[-1] for r in records.values() if r.values is not None)
    vals, ok = np.zeros((len(found), channels)), np.zeros(len(found), bool)
    for k in np.unique(landing.frame[found]):
        sel = np.flatnonzero(landing.frame == k)
        v, good = reader(records[int(k)], landing.y[sel], landing.x[sel])
        vals[sel], ok[sel] = v, good
    return vals, ok


def records_from_clip(
    masks: np.ndarray,
    flows_fw: np.ndarray,
    flows_bw: np.ndarray,
    values: Optional[np.ndarray] = None,
    estimated: Optional[np.ndarray] = None,
) -> dict[int, FrameRecord]:
    """Whole-frame records of a clip: `masks [F, H, W]`, flows `[F-1, 2, H, W]`, `values [F, H, W, C]`.

    `estimated [F, H, W]` says where flows were estimated (default: nowhere, i.e. no occlusion check).
    """
    f = masks.shape[0]
    masks = masks > 0.5
    est = np.zeros_like(masks) if estimated is None else estimated.astype(bool)
    return {
        k: FrameRecord(
            0, 0, masks[k], est[k],
            flows_fw[k].astype(np.float32) if k < f - 1 else None,
            flows_bw[k - 1].astype(np.float32) if k > 0 else None,
            None if values is None else values[k],
        )
        for k in range(f)
    }
