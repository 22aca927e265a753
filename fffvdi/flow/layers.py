"""Motion layers at a hole's border: fill a fixed hole's flow from its border's dominant layer, not a blend.

A flow completer fills a hole from the flow around it. When a person walks past a fixed logo, part of that border
moves with the person and the rest with the background; the membrane fill blends the two into a motion that nobody
has, and traces that follow it drag the person into the hole. Here, around each hole (a connected component) that
stays put, the known pixels within `band` px (its ring) are fitted with one affine motion, robustly (start from the
median flow, then refit on the pixels that agree, a few rounds); pixels that disagree by more than `tol` px (or 3
robust sigmas, if larger) are the other layer. The completer fills the hole from the dominant layer only and keeps
the other layer's own flow as estimated (`FlowCompleter.complete_pair(ignore=...)`), and a trajectory that follows
the hole's flow and lands on the other layer is occluded there (`fffvdi.flow.trace`): it moved with the hidden
background, and that pixel shows the passer in front of it. Filling the hole per layer instead (each
hole pixel from the nearer layer's border) was tried and measured worse on real footage: the passing object's layer
then claims a wide strip of the hole and drags the object in again (README, propagate on real footage). A moving hole
is left alone: what passes its border may well be behind it, and its traces land soon anyway.
"""
from __future__ import annotations

import cv2
import numpy as np

MOVED = 0.01  # a hole that uncovers more than this fraction of itself in the other frame is moving, not judged
ROUNDS = 4  # refits of the affine motion on its inliers; it settles in 2-3 on real footage


def _affine_inliers(pts: np.ndarray, vals: np.ndarray, tol: float) -> np.ndarray:
    """Bool `[N]`: points `[N, 2]` (x, y) whose flow `vals [N, 2]` agrees with the dominant affine motion."""
    res = np.linalg.norm(vals - np.median(vals, 0), axis=1)  # start: a robust translation
    design = np.concatenate([pts - pts.mean(0), np.ones((len(pts), 1))], 1)  # [N, 3], centred for conditioning
    inl = res <= max(tol, 3 * 1.4826 * np.median(res))
    for _ in range(ROUNDS):
        if inl.sum() < 3:
            break
        coef, *_ = np.linalg.lstsq(design[inl], vals[inl], rcond=None)  # [3, 2]
        res = np.linalg.norm(design @ coef - vals, axis=1)
        new = res <= max(tol, 3 * 1.4826 * np.median(res[inl]))
        if np.array_equal(new, inl):
            break
        inl = new
    return inl


def border_layers(
    flow: np.ndarray, hole: np.ndarray, other_hole: np.ndarray, band: int = 16, tol: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """`(other, ring)` bool `[H, W]`: the known pixels within `band` px of the fixed holes of `flow [2, H, W]` (ring),
    and those of them that move unlike the ring's majority (other). `other_hole`: the hole of the flow's other frame;
    a hole of which more than `MOVED` is uncovered there is moving and gets no ring."""
    other, ring = np.zeros(hole.shape, bool), np.zeros(hole.shape, bool)
    if not hole.any():
        return other, ring
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hole.astype(np.uint8), connectivity=8)
    h, w = hole.shape
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    for c in range(1, count):
        x, y, bw, bh = stats[c, :4]
        comp = labels[y : y + bh, x : x + bw] == c
        if (comp & ~other_hole[y : y + bh, x : x + bw]).sum() > MOVED * comp.sum():
            continue  # a moving hole
        y0, x0, y1, x1 = max(y - band, 0), max(x - band, 0), min(y + bh + band, h), min(x + bw + band, w)
        near = cv2.dilate((labels[y0:y1, x0:x1] == c).astype(np.uint8), kernel) > 0
        ys, xs = np.nonzero(near & ~hole[y0:y1, x0:x1])  # the component's known surroundings
        if len(ys) < 6:  # too little border to tell layers apart
            continue
        vals = flow[:, y0 + ys, x0 + xs].T.astype(np.float64)  # [N, 2]
        inl = _affine_inliers(np.stack([xs, ys], 1).astype(np.float64), vals, tol)
        ring[y0 + ys, x0 + xs] = True
        other[y0 + ys[~inl], x0 + xs[~inl]] = True
    return other, ring


def occluders(other: np.ndarray, flow_hole: np.ndarray) -> np.ndarray:
    """Bool `[H, W]`: the other layer's pixels and the completed band pixels (in `flow_hole`) nearer to them than to
    the rest of the ring: where a trajectory that moved with the hole's layer lands on the passer (None-safe)."""
    if other is None or not other.any():
        return other
    to_other = cv2.distanceTransform((~other).astype(np.uint8), cv2.DIST_L2, 5)
    to_rest = cv2.distanceTransform((flow_hole | other).astype(np.uint8), cv2.DIST_L2, 5)
    return other | (flow_hole & (to_other < to_rest))


def pair_layers(
    flow_fw: np.ndarray, flow_bw: np.ndarray, hole_fw: np.ndarray, hole_bw: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """The other layer around the fixed holes of a pair's forward and backward flows `[2, H, W]`, each judged against
    the other frame's hole (`hole_fw`, `hole_bw [H, W]`: the completer's holes): `complete_pair(ignore=...)`."""
    return border_layers(flow_fw, hole_fw, hole_bw, tol=tol)[0], border_layers(flow_bw, hole_bw, hole_fw, tol=tol)[0]
