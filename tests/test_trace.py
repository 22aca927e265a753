"""Trajectory tracing of pixels: oracles with known flows (sub-pixel pans, zoom, long chains, occlusion, radius)."""
import numpy as np
import pytest

from fffvdi.flow.trace import records_from_clip, trace
from fffvdi.propagate.pixels import combine_candidates, propagate_clip
from synthetic_video import const_flow, translating_video


def psnr(a, b, peak=1.0):
    return float(10 * np.log10(peak**2 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


def visible_somewhere(masks, t, ys, xs, flow_at, n):
    """Oracle: hole point (y, x) of frame t is seen with all bilinear corners visible in some other frame."""
    f, h, w = masks.shape
    seen = np.zeros(len(ys), bool)
    for k in range(n):
        if k == t:
            continue
        py, px = flow_at(ys, xs, t, k)
        y0, x0 = np.floor(py).astype(int), np.floor(px).astype(int)
        ok = (py >= 0) & (py <= h - 1) & (px >= 0) & (px <= w - 1)
        for dy in (0, 1):
            for dx in (0, 1):
                yy, xx = np.clip(y0 + dy, 0, h - 1), np.clip(x0 + dx, 0, w - 1)
                ok &= ~masks[k, yy, xx]
        seen |= ok
    return seen


@pytest.mark.parametrize("shift", [(0.3, 0.0), (0.37, 0.21), (1.5, 0.5), (2.6, -1.1), (6.3, 2.0)])
def test_pixels_under_subpixel_translation_are_recovered_exactly(shift):
    n, h, w = 24, 64, 96
    video = translating_video(shift, n, size=(h, w))[0].numpy().transpose(0, 2, 3, 1)  # [F, H, W, 3]
    masks = np.zeros((n, h, w), bool)
    masks[:, 20:44, 30:60] = True
    fw = const_flow(shift, n - 1, h, w)[0].numpy()
    corrupted = np.where(masks[..., None], 1.0, video)  # a white object: must never reach the output
    out, unfilled = propagate_clip(corrupted, masks, fw, -fw)
    assert np.array_equal(out[~masks], video[~masks].astype(np.float64))
    for t in (0, n // 2, n - 1):
        ys, xs = np.nonzero(masks[t])
        seen = visible_somewhere(masks, t, ys, xs, lambda y, x, a, b: (y + shift[1] * (b - a), x + shift[0] * (b - a)), n)
        assert seen.any() and not unfilled[t, ys[seen], xs[seen]].any()
        p = psnr(out[t, ys[seen], xs[seen]], video[t, ys[seen], xs[seen]])
        assert p > 40, (t, p)  # measured 51-63 dB


def _analytic(y, x, seed=0):
    """A smooth colour texture defined everywhere (sum of sinusoids, wavelengths >= 9 px), in [0, 1]."""
    rng = np.random.default_rng(seed)
    out = np.zeros(np.shape(y) + (3,))
    for _ in range(12):
        k = rng.uniform(-0.7, 0.7, 2)
        out += rng.uniform(0.2, 1, 3) * np.sin(k[0] * x[..., None] + k[1] * y[..., None] + rng.uniform(0, 6.3, 3))[...]
    return 0.5 + out / 12


def test_pixels_under_zoom_are_recovered():
    n, h, w, s = 30, 72, 96, 1.02  # frame k+1 is frame k zoomed in by 2 % about the centre
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    video = np.stack([_analytic(cy + (yy - cy) / s**k, cx + (xx - cx) / s**k) for k in range(n)])
    fw = np.stack([np.stack([(xx - cx) * (s - 1), (yy - cy) * (s - 1)])] * (n - 1)).astype(np.float32)
    bw = np.stack([np.stack([(xx - cx) * (1 / s - 1), (yy - cy) * (1 / s - 1)])] * (n - 1)).astype(np.float32)
    masks = np.zeros((n, h, w), bool)
    masks[:, 26:46, 52:70] = True  # off-centre: zooming pushes the content outwards past the hole
    out, unfilled = propagate_clip(video, masks, fw, bw)
    ys, xs = np.nonzero(masks[0])
    seen = visible_somewhere(masks, 0, ys, xs, lambda y, x, a, b: (cy + (y - cy) * s ** (b - a), cx + (x - cx) * s ** (b - a)), n)
    assert seen.mean() > 0.5 and not unfilled[0, ys[seen], xs[seen]].any()
    p = psnr(out[0, ys[seen], xs[seen]], video[0, ys[seen], xs[seen]])
    assert p > 40, p  # measured 53 dB


@pytest.mark.parametrize("gap", [1, 60])
def test_fill_from_far_frames_is_as_sharp_as_from_the_next(gap):
    """Frame 0's hole shows only in frame `gap`: 60 composed sub-pixel steps must not blur (chained warps do)."""
    n, h, w, shift = gap + 1, 48, 64, (0.37, 0.13)
    video = translating_video(shift, n, size=(h, w), corr=2.0)[0].numpy().transpose(0, 2, 3, 1)
    masks = np.zeros((n, h, w), bool)
    masks[0, 16:32, 20:40] = True
    masks[1:gap] = True  # everything in between is hidden
    fw = const_flow(shift, n - 1, h, w)[0].numpy()
    out, unfilled = propagate_clip(video, masks, fw, -fw, targets=[0])
    hole = masks[0]
    assert not unfilled[0][hole].any()
    p = psnr(out[0][hole], video[0][hole])
    assert p > 40, p  # measured 42.1 dB from 1 frame away and 43.1 dB from 60 frames away
    lap = lambda im: np.abs(4 * im[1:-1, 1:-1] - im[:-2, 1:-1] - im[2:, 1:-1] - im[1:-1, :-2] - im[1:-1, 2:])  # noqa: E731
    sharp = lap(out[0].mean(-1))[16:30, 20:38].mean() / lap(video[0].mean(-1))[16:30, 20:38].mean()
    assert sharp > 0.85, sharp  # high-frequency energy kept: measured 0.91 (gap 1) and 0.92 (gap 60)


def test_occluded_landing_is_rejected_and_radius_is_respected():
    # Frame 0's hole moves right with the completed flow (+2 px); frame 1's estimated back-flow there
    # says the content came from elsewhere (+5 px): an occluder, so no source in frame 1.
    f, h, w = 4, 20, 40
    masks = np.zeros((f, h, w), bool)
    masks[0, 5:15, 10:20] = True
    fw = np.zeros((f - 1, 2, h, w), np.float32)
    bw = np.zeros_like(fw)
    fw[:, 0] = 2.0
    bw[:, 0] = -2.0
    bw[0, 0, :, 10:25] = 5.0  # inconsistent with the forward step
    est = np.ones((f, h, w), bool)
    rec = records_from_clip(masks, fw, bw, np.zeros((f, h, w, 1), np.float32), est)
    ys, xs = np.nonzero(masks[0])
    checked = trace(rec, (h, w), 0, ys, xs, +1, radius=3, fb_check=True)
    unchecked = trace(rec, (h, w), 0, ys, xs, +1, radius=3, fb_check=False)
    assert not checked.found.any() and (unchecked.frame == 1).all()
    rec_completed = records_from_clip(masks, fw, bw, None, np.zeros((f, h, w), bool))  # completed: never rejected
    assert (trace(rec_completed, (h, w), 0, ys, xs, +1, radius=3).frame == 1).all()
    # a static hole in frames 0..2 is seen first in frame 3: radius 2 must not reach it
    masks[:3] = masks[0]
    rec = records_from_clip(masks, np.zeros_like(fw), np.zeros_like(bw))
    assert not trace(rec, (h, w), 0, ys, xs, +1, radius=2).found.any()
    assert (trace(rec, (h, w), 0, ys, xs, +1, radius=3).frame == 3).all()


def test_occlusion_check_covers_partial_landings():
    # Frame 0's hole moves right by 2.5 px; frame 1's hole is 2 px wider, so the rightmost points land with
    # their nearest pixel visible but a bilinear corner hidden (a partial landing). Frame 1's estimated
    # back-flow contradicts the step there: an occluder, which must end those trajectories like clean landings.
    f, h, w = 3, 20, 40
    masks = np.zeros((f, h, w), bool)
    masks[0, 5:15, 10:20] = True
    masks[1, 5:15, 10:22] = True
    fw = np.full((f - 1, 2, h, w), 0.0, np.float32)
    fw[:, 0] = 2.5
    bw = -fw.copy()
    bw[0, 0, :, 20:] = 6.0  # inconsistent with the forward step where frame 1 is visible
    est = np.ones((f, h, w), bool)
    rec = records_from_clip(masks, fw, bw, np.zeros((f, h, w, 1), np.float32), est)
    ys, xs = np.nonzero(masks[0])
    checked = trace(rec, (h, w), 0, ys, xs, +1, radius=2, fb_check=True, support="bilinear")
    unchecked = trace(rec, (h, w), 0, ys, xs, +1, radius=2, fb_check=False, support="bilinear")
    partial = xs == 19  # 19 + 2.5 = 21.5: nearest pixel 22 visible, corner 21 hidden
    assert (unchecked.frame[partial] == 2).all()
    assert not checked.found[partial].any()


def test_combine_nearest_and_weighted():
    vals = [np.array([[0.0], [0.0], [0.0]]), np.array([[1.0], [1.0], [1.0]])]
    oks = [np.array([True, True, False]), np.array([True, True, True])]
    dists = [np.array([1, 3, 1]), np.array([3, 3, 2])]
    near, ok = combine_candidates(vals, oks, dists, "nearest")
    assert ok.all() and near[:, 0].tolist() == [0.0, 0.5, 1.0]
    mix, _ = combine_candidates(vals, oks, dists, "weighted")
    assert mix[:, 0].tolist() == pytest.approx([0.25, 0.5, 1.0])


def test_propagate_clip_passes_combine_and_fb_check_through():
    f, h, w = 6, 16, 24
    frames = np.broadcast_to((np.arange(f) / 10.0)[:, None, None, None], (f, h, w, 1)).copy()  # frame k is k/10
    masks = np.zeros((f, h, w), bool)
    masks[2:4, 4:12, 6:18] = True  # frame 2's hole: past source 1 frame away (0.1), future 2 frames away (0.4)
    zero = np.zeros((f - 1, 2, h, w), np.float32)
    near, _ = propagate_clip(frames, masks, zero, zero, targets=[2], combine="nearest")
    mix, _ = propagate_clip(frames, masks, zero, zero, targets=[2], combine="weighted")
    assert np.allclose(near[2][masks[2]], 0.1) and np.allclose(mix[2][masks[2]], (0.1 + 0.4 / 2) / 1.5)
    bad_bw = zero.copy()
    bad_bw[:, 0] = 3.0  # estimated back-flows that contradict the zero forward flow: every landing is occluded
    est = np.ones((f, h, w), bool)
    _, unfilled = propagate_clip(frames, masks, zero, bad_bw, estimated=est, targets=[2], fb_check=True)
    _, unchecked = propagate_clip(frames, masks, zero, bad_bw, estimated=est, targets=[2], fb_check=False)
    assert unfilled[2][masks[2]].all() and not unchecked[2][masks[2]].any()


def test_clip_source_filled_is_frame0_with_its_hole_traced_from_later_frames():
    import torch

    from fffvdi.inpaint.conditioner import clip_source_image

    n, h, w, shift = 8, 48, 64, (2.4, 0.7)
    video = translating_video(shift, n, size=(h, w))  # [1, F, 3, H, W]
    masks = torch.zeros(1, n, 1, h, w)
    masks[:, :, :, 16:32, 20:36] = 1
    fw = const_flow(shift, n - 1, h, w)
    filled = clip_source_image("filled", video, masks, fw, -fw)
    masked = clip_source_image("masked", video, masks, fw, -fw)
    hole = masks[0, 0, 0] > 0
    assert filled.shape == (1, 3, h, w)
    assert torch.equal(filled[0][:, ~hole], video[0, 0][:, ~hole])
    assert psnr(filled[0][:, hole].numpy(), video[0, 0][:, hole].numpy()) > 40
    assert (masked[0][:, hole] == 0).all()
