"""The `propagate` method over a whole video, streamed: flows once per frame pair, crops in a ring buffer.

Frame j is read, spatially pre-filled (Telea) so the flow estimator sees no flat hole, and the
flows of pair (j-1, j) are estimated and completed inside the (dilated) holes once. Frame j-1's
`FrameRecord` then keeps only the crop that trajectories can visit or land in: its hole, and
where points from the neighbouring frames' holes can land. Target frame t is finished once the
records up to t + radius exist: its hole pixels are traced both ways (`fill_points`), optionally
blended in the gradient domain, the rest filled spatially, and the frame goes to `sink`. Records
older than t - radius are dropped, so memory follows the radius and the hole area, not the length.

A frame that is all hole has no content to estimate flow on: the flow between the frames with
content on either side is shared equally by the steps across it (constant motion); before the
first and after the last frame with content, the nearest known motion goes on (zero if none).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from fffvdi.flow.completion import FlowCompleter
from fffvdi.flow.estimators import FlowEstimator
from fffvdi.flow.layers import occluders, pair_layers
from fffvdi.flow.trace import FrameRecord, Landing
from fffvdi.propagate.options import PropagateOptions
from fffvdi.propagate.pixels import STEPS, fill_points, poisson_blend, source_gradients
from fffvdi.propagate.carry import carry_unrevealed
from fffvdi.propagate.holes import grow_hole, source_hole
from fffvdi.propagate.telea import fill_unrevealed, hole_box, telea_frame
from fffvdi.propagate.trust import trusted

@dataclass
class PropagateStats:
    """What the run did, for logs and tests."""

    hole_pixels: int = 0
    propagated: int = 0  # hole pixels filled from other frames
    max_records: int = 0  # most frame records held at once (the ring buffer's size)


def _union(*boxes: Optional[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Smallest box holding all given boxes; an empty box at the origin if none."""
    live = [b for b in boxes if b is not None]
    if not live:
        return (0, 0, 0, 0)
    return (min(b[0] for b in live), min(b[1] for b in live), max(b[2] for b in live), max(b[3] for b in live))


def _either(a: Optional[np.ndarray], b: Optional[np.ndarray], box: tuple[int, int, int, int]) -> Optional[np.ndarray]:
    """The union of two optional masks `[H, W]`, cropped to `box`; None when both are None."""
    y0, x0, y1, x1 = box
    live = [m[y0:y1, x0:x1] for m in (a, b) if m is not None]
    return None if not live else np.logical_or.reduce(live)


def _reach(flow: Optional[np.ndarray], region: np.ndarray) -> int:
    """Whole pixels a point inside `region` can move in one step of `flow [2, H, W]`, plus a safety pixel."""
    if flow is None or not region.any():
        return 0
    return int(np.ceil(np.sqrt((flow[:, region] ** 2).sum(0)).max())) + 2


class _Pairs:
    """Flows of neighbouring frames, estimated on Telea-prefilled frames and completed, once per pair."""

    def __init__(self, estimator: FlowEstimator, completer: FlowCompleter, layer_tol: Optional[float] = None) -> None:
        self.estimator, self.completer, self.layer_tol = estimator, completer, layer_tol

    def __call__(self, prev: dict, cur: dict) -> tuple[np.ndarray, ...]:
        """Records-to-be of two frames (`prefilled` float RGB [H, W, 3] in [0, 1], `hole`, `flow_hole`) -> completed
        (fw, bw), each [2, H, W], and the other motion layer at the fixed holes' borders on each one's grid
        (`fffvdi.flow.layers`; None when off)."""
        clip = torch.from_numpy(np.stack([prev["prefilled"], cur["prefilled"]])).permute(0, 3, 1, 2)[None].float()
        fw, bw = self.estimator(clip)  # each [1, 1, 2, H, W]
        masks = torch.from_numpy(np.stack([prev["hole"], cur["hole"]]).astype(np.float32))[None, :, None]
        other_fw = other_bw = ignore = None
        if self.layer_tol is not None and self.completer.from_border:  # flow_hole: the completer's hole, once
            other_fw, other_bw = pair_layers(fw[0, 0].cpu().numpy(), bw[0, 0].cpu().numpy(), prev["flow_hole"],
                                             cur["flow_hole"], self.layer_tol)
            ignore = tuple(torch.from_numpy(o)[None, None, None] for o in (other_fw, other_bw))  # [1, 1, 1, H, W]
        fw, bw = self.completer.complete_pair(fw, bw, masks, clip, ignore)  # pre-filled frames guide edge-aware ones
        return fw[0, 0].cpu().numpy(), bw[0, 0].cpu().numpy(), other_fw, other_bw


def _blend_seams(
    records: dict[int, FrameRecord], frame: np.ndarray, hole: np.ndarray, ys: np.ndarray, xs: np.ndarray,
    chosen: Landing,
) -> np.ndarray:
    """`blend=poisson`: hole values `[N, 3]` at hole points `(ys, xs)` re-solved from their source gradients."""
    y0, x0, y1, x1 = hole_box(hole, 1, hole.shape)
    grads = np.full((y1 - y0, x1 - x0, len(STEPS), 3), np.nan)
    grads[ys - y0, xs - x0] = source_gradients(records, chosen)
    blended = poisson_blend(frame[y0:y1, x0:x1], hole[y0:y1, x0:x1], grads)
    return blended[ys - y0, xs - x0]


def _finish(
    records: dict[int, FrameRecord], t: int, frame: np.ndarray, hole: np.ndarray, opts: PropagateOptions,
    stats: PropagateStats, previous: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inpaint frame `t` (uint8 [H, W, 3]) from the records -> (frame, hole pixels no other frame showed).

    An all-hole frame that no trajectory reaches takes `previous` (the last finished frame) when given.
    """
    if not hole.any():
        return frame, hole
    ys, xs = np.nonzero(hole)
    vals, ok, chosen = fill_points(
        records, hole.shape, t, ys, xs, opts.radius, opts.combine, opts.fb_check, opts.max_jump, opts.agree)
    if opts.blend == "poisson" and ok.any():
        vals = _blend_seams(records, frame, hole, ys, xs, chosen)
    take = ok
    result = frame.copy()
    rec = records.get(t)
    result[ys[take], xs[take]] = np.clip(np.rint(vals[take]), 0, 255).astype(np.uint8)
    left = hole.copy()
    left[ys[take], xs[take]] = False
    stats.hole_pixels += int(hole.sum())
    stats.propagated += int(take.sum())
    if left.all() and previous is not None:  # nothing known nor propagated: the nearest finished content
        result = previous.copy()
    elif left.any():  # never revealed within the radius: carried from the last frame, else a spatial fill
        rest = carry_unrevealed(result, left, previous, rec) if opts.unrevealed == "carry" else left
        if rest.any():
            sources = source_hole(hole, opts.source_erode)  # made again here, not held: a full frame per pending frame
            result = fill_unrevealed(result, frame, hole, rest, sources, opts.telea_radius, opts.spatial)
    return result, left


def propagate_video(
    read_frames: Callable[[int, int], np.ndarray],
    read_masks: Callable[[int, int], np.ndarray],
    total: int,
    sink: Callable[[int, np.ndarray], None],
    estimator: FlowEstimator,
    completer: FlowCompleter,
    opts: Optional[PropagateOptions] = None,
    progress: bool = True,
    report: Optional[Callable[[int, np.ndarray], None]] = None,
) -> PropagateStats:
    """Inpaint `total` frames by flow-traced propagation, handing each finished frame to `sink(index, [1, H, W, 3])`.

    `report(index, unfilled [H, W] bool)` (optional) hears which hole pixels were filled spatially.
    """
    opts = opts or PropagateOptions()
    pairs = _Pairs(estimator, completer, opts.layers)
    dilation = completer.dilation
    stats = PropagateStats()
    records: dict[int, FrameRecord] = {}
    pending: deque = deque()  # (index, uint8 frame, hole) of frames not yet finished, in order
    bar: Optional[tqdm] = None  # opened at the first finished frame, so early input errors print alone

    def make_record(k: int, prev: Optional[dict], cur: dict, nxt: Optional[dict]) -> None:
        """Crop frame k's record once its flows to both neighbours are known."""
        size = cur["hole"].shape
        box = _union(
            hole_box(cur["hole"], 2, size),
            hole_box(prev["hole"], _reach(prev["flow_next"], prev["flow_hole"]), size) if prev else None,
            hole_box(nxt["hole"], _reach(nxt["flow_prev"], nxt["flow_hole"]), size) if nxt else None,
        )
        y0, x0, y1, x1 = box
        crop = (slice(None),) + (slice(y0, y1), slice(x0, x1))
        hole = cur["source_hole"][y0:y1, x0:x1]  # a landing must lie outside it
        values = np.where(hole[..., None], 0, cur["frame"][y0:y1, x0:x1]).astype(np.uint8)
        records[k] = FrameRecord(
            y0, x0, hole.copy(), ~cur["flow_hole"][y0:y1, x0:x1],
            None if cur["flow_next"] is None else np.ascontiguousarray(cur["flow_next"][crop]),
            None if cur["flow_prev"] is None else np.ascontiguousarray(cur["flow_prev"][crop]),
            values,
            None if cur.get("trust_next") is None else cur["trust_next"][y0:y1, x0:x1],
            None if cur.get("trust_prev") is None else cur["trust_prev"][y0:y1, x0:x1],
            _either(cur.get("other_next"), cur.get("other_prev"), box),
        )

    previous: Optional[np.ndarray] = None  # the last finished frame

    def finish_ready(last_record: int, final: bool) -> None:
        nonlocal bar, previous
        while pending and (final or pending[0][0] + opts.radius <= last_record):
            t, frame, hole = pending.popleft()
            result, left = _finish(records, t, frame, hole, opts, stats, previous)
            previous = result
            sink(t, result[None])
            if report is not None:
                report(t, left)
            for k in [k for k in records if k < t + 1 - opts.radius]:
                del records[k]  # no later target reaches this far back
            if bar is None:
                bar = tqdm(total=total, initial=t, desc="propagate", unit="frame", disable=not progress)
            bar.update(1)

    before: Optional[dict] = None  # the frame preceding `anchor` (its record's past neighbour)
    anchor: Optional[dict] = None  # the last frame with visible pixels; its flow to the next one is unknown
    gap: list[dict] = []  # all-hole frames after `anchor`: no content to estimate flow on
    lead: list[dict] = []  # all-hole frames opening the video, linked once the first motion is known

    def link(chain: list[dict], fw: np.ndarray, bw: np.ndarray, final: bool = False) -> None:
        """Give consecutive frames of `chain` the flows `fw`/`bw`, then make the records of all but the last
        (of all of them when `final`: the last then has no next frame)."""
        nonlocal before
        for a, b in zip(chain, chain[1:]):
            a["flow_next"], b["flow_prev"] = fw, bw
        seq = [before, *chain] + ([None] if final else [])
        for i in range(1, len(seq) - 1):
            make_record(seq[i]["index"], seq[i - 1], seq[i], seq[i + 1])
            seq[i].pop("prefilled", None)
        before = seq[-2]

    try:  # the bar ends its line however the run ends, so an error message starts on its own
        for j in range(total):
            frame = read_frames(j, j + 1)[0]
            hole = read_masks(j, j + 1)[0] > 0
            cur = dict(index=j, frame=frame, hole=hole, flow_next=None, flow_prev=None, flow_hole=grow_hole(hole, dilation),
                       source_hole=source_hole(hole, opts.source_erode))
            pending.append((j, frame, hole))
            if hole.all():  # flows to it are decided when the next frame with content arrives
                gap.append(cur)
                continue
            cur["prefilled"] = telea_frame(frame, hole, opts.telea_radius).astype(np.float32) / 255.0
            if anchor is None:
                lead = gap
            else:
                fw, bw, other_fw, other_bw = pairs(anchor, cur)
                anchor["other_next"] = occluders(other_fw, anchor["flow_hole"])
                cur["other_prev"] = occluders(other_bw, cur["flow_hole"])
                if opts.trust is not None and not gap:  # across all-hole frames there is no border to judge by
                    anchor["trust_next"] = trusted(fw, anchor["flow_hole"], opts.trust)
                    cur["trust_prev"] = trusted(bw, cur["flow_hole"], opts.trust)
                # Across all-hole frames, assume constant motion: each step takes an equal share of the flow.
                fw, bw = fw / (len(gap) + 1), bw / (len(gap) + 1)
                if lead:  # and the same motion back to the start of the video
                    link([*lead, anchor], fw, bw)
                    lead = []
                link([anchor, *gap, cur], fw, bw)
            anchor, gap = cur, []
            stats.max_records = max(stats.max_records, len(records))
            finish_ready(j - 1, final=False)
        if total:
            zero = np.zeros((2, *(anchor or gap[0])["hole"].shape), np.float32)
            if anchor is None:  # no content anywhere: nothing moves
                link(gap, zero, zero, final=True)
            else:
                if lead:  # a single frame with content: no motion known
                    link([*lead, anchor], zero, zero)
                # After the last frame with content, the last motion goes on.
                fw = before["flow_next"] if before is not None else zero
                bw = anchor["flow_prev"] if anchor["flow_prev"] is not None else zero
                link([anchor, *gap], fw, bw, final=True)
        finish_ready(total - 1, final=True)
    finally:
        if bar is not None:
            bar.close()
    return stats
