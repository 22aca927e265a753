"""Flow/mask resizing and first-frame noise filling (flow-traced) on synthetic known motion."""
import numpy as np
import pytest
import torch

from fffvdi.errors import InputError
from fffvdi.flow.resize import resize_flows_and_masks
from fffvdi.inpaint.first_frame_fill import fill_first_frame_noise
from synthetic_video import const_flow


def test_resize_flows_and_masks():
    flows = const_flow((8.0, -4.0), 3, 64, 96)
    masks = torch.zeros(1, 4, 1, 64, 96)
    masks[..., 8:16, 8:16] = 1  # exactly latent cell (1, 1)
    masks[..., 40, 40] = 1  # a single pixel in cell (5, 5), not its centre
    f_lat, m_near = resize_flows_and_masks(flows, masks, (8, 12))
    assert f_lat.shape == (1, 3, 2, 8, 12)
    assert torch.allclose(f_lat, const_flow((1.0, -0.5), 3, 8, 12))  # displacements scale with the size
    assert m_near[0, 0, 0, 1, 1] == 1 and m_near[0, 0, 0, 5, 5] == 0 and m_near.sum() == 4
    _, m_max = resize_flows_and_masks(None, masks, (8, 12), mask_mode="max")
    assert m_max[0, 0, 0, 1, 1] == 1 and m_max[0, 0, 0, 5, 5] == 1 and m_max.sum() == 8
    f_up, _ = resize_flows_and_masks(const_flow((1.0, 1.0), 1, 8, 12), None, (16, 36))
    assert torch.allclose(f_up, const_flow((3.0, 2.0), 1, 16, 36))


def test_noise_fill_copies_future_noise_exactly_for_integer_shift():
    g = torch.Generator().manual_seed(0)
    n, c, h, w, d = 4, 4, 32, 40, (3, -2)  # 3 future frames shift 9 px < 12 px hole: some stay unfilled
    noise = torch.randn(1, n, c, h, w, generator=g)
    masks = torch.zeros(1, n, 1, h, w)
    masks[..., 10:22, 12:24] = 1  # static hole in every frame
    out, unfilled = fill_first_frame_noise(noise, masks, const_flow(d, n - 1, h, w), const_flow((-3, 2), n - 1, h, w))
    assert unfilled.shape == (1, 1, 1, h, w) and unfilled.dtype == torch.bool
    assert torch.equal(out[:, 1:], noise[:, 1:])
    for y in range(h):
        for x in range(w):
            if masks[0, 0, 0, y, x] == 0:
                assert torch.equal(out[0, 0, :, y, x], noise[0, 0, :, y, x])
                continue
            expect = None  # oracle: first future frame where the point is visible, following the motion
            for k in range(1, n):
                qy, qx = y + d[1] * k, x + d[0] * k
                if not (0 <= qy < h and 0 <= qx < w):
                    break
                if masks[0, k, 0, qy, qx] == 0:
                    expect = noise[0, k, :, qy, qx]
                    break
            if expect is None:
                assert unfilled[0, 0, 0, y, x] and torch.equal(out[0, 0, :, y, x], noise[0, 0, :, y, x])
            else:
                assert not unfilled[0, 0, 0, y, x] and torch.equal(out[0, 0, :, y, x], expect)
    assert 0 < unfilled.sum() < masks[0, 0].sum()


def test_noise_fill_keeps_white_noise_statistics_for_subpixel_motion():
    g = torch.Generator().manual_seed(1)
    n, c, h, w = 4, 4, 96, 96
    noise = torch.randn(1, n, c, h, w, generator=g)
    masks = torch.zeros(1, n, 1, h, w)
    masks[:, 0, :, 8:88, 8:88] = 1  # only frame 0 is masked: frame 1 reveals everything
    out, unfilled = fill_first_frame_noise(
        noise, masks, const_flow((1.5, 0.5), n - 1, h, w), const_flow((-1.5, -0.5), n - 1, h, w)
    )
    assert not unfilled.any()
    vals = out[0, 0, :, 8:88, 8:88]
    # measured mean -0.003, std 0.999 (bilinear sampling would give std 0.50 here)
    assert abs(vals.mean().item()) < 0.03 and abs(vals.std().item() - 1) < 0.03
    assert torch.isin(vals, noise[0, 1]).all()  # every value is a copy of a frame-1 sample
    src = torch.full_like(noise, 7.0)
    out2, _ = fill_first_frame_noise(noise, masks, const_flow((1.5, 0.5), n - 1, h, w),
                                     const_flow((-1.5, -0.5), n - 1, h, w), source_latents=src)
    assert (out2[0, 0, :, 8:88, 8:88] == 7.0).all() and torch.equal(out2[:, 1:], noise[:, 1:])


def test_noise_fill_dedupes_converging_flow_and_uses_generator():
    n, c, h, w = 3, 2, 48, 48
    noise = torch.randn(1, n, c, h, w, generator=torch.Generator().manual_seed(2))
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    centre = (h - 1) / 2
    shrink = torch.stack([xs - centre, ys - centre])[None, None].expand(1, n - 1, 2, h, w)
    fw, bw = -0.5 * shrink, 1.0 * shrink  # frame t+1 is frame t zoomed out by 2: two targets per source
    masks = torch.zeros(1, n, 1, h, w)
    masks[:, 0, :, 16:32, 16:32] = 1
    out, unfilled = fill_first_frame_noise(noise, masks, fw, bw)
    got = (masks[0, 0, 0] > 0) & ~unfilled[0, 0, 0]
    vals = out[0, 0, 0][got]
    assert vals.numel() > 0 and vals.unique().numel() == vals.numel()  # no duplicated source sample
    assert torch.equal(out[0, 0][:, unfilled[0, 0, 0]], noise[0, 0][:, unfilled[0, 0, 0]])
    out_g, unfilled_g = fill_first_frame_noise(noise, masks, fw, bw, generator=torch.Generator().manual_seed(3))
    assert torch.equal(unfilled_g, unfilled)
    assert not torch.equal(out_g[0, 0][:, unfilled[0, 0, 0]], noise[0, 0][:, unfilled[0, 0, 0]])


def _decode(ids, h, w):
    """Global sample index -> (frame, y, x)."""
    ids = ids.long()
    return ids // (h * w), (ids % (h * w)) // w, ids % w


@pytest.mark.parametrize("speed", [0.3125, 0.5, 0.75, 1.25, 2.6])
@pytest.mark.parametrize("scene", ["pan", "pan_and_moving_object"])
def test_noise_fill_traces_subpixel_motion_to_the_right_source(speed, scene):
    """Oracle: content of frame-0 cell (y, x) is at x + v*k in frame k; it must come from the first frame showing it."""
    n, c, h, w = 14, 4, 32, 64
    ids = torch.arange(n * h * w, dtype=torch.float32).view(1, n, 1, h, w).expand(1, n, c, h, w).clone()
    masks = torch.zeros(1, n, 1, h, w)
    obj_speed = 0.0 if scene == "pan" else -0.6  # the removed object moves against the pan
    hole_x = []
    for k in range(n):
        x0 = 20 + int(np.floor(obj_speed * k + 0.5))
        masks[0, k, 0, 8:24, x0 : x0 + 16] = 1
        hole_x.append(x0)
    fw = const_flow((speed, 0.0), n - 1, h, w)
    out, unfilled = fill_first_frame_noise(ids, masks, fw, -fw)
    revealable = filled = right = 0
    for y in range(8, 24):
        for x in range(hole_x[0], hole_x[0] + 16):
            first = next((k for k in range(1, n) if x + speed * k <= w - 1
                          and not hole_x[k] <= np.floor(x + speed * k + 0.5) < hole_x[k] + 16), None)
            if first is None or any(x + speed * k > w - 1 for k in range(1, first)):
                assert unfilled[0, 0, 0, y, x] and out[0, 0, 0, y, x] == ids[0, 0, 0, y, x]  # keeps its own noise
                continue
            revealable += 1
            if unfilled[0, 0, 0, y, x]:
                continue
            filled += 1
            k, sy, sx = _decode(out[0, 0, 0, y, x], h, w)
            right += int(k == first and sy == y and abs(float(sx) - (x + speed * first)) <= 0.55)
    assert revealable > 0
    assert filled >= 0.9 * revealable, (filled, revealable)
    assert right >= 0.95 * filled, (right, filled)
    assert torch.equal(out[:, 1:], ids[:, 1:])


def test_noise_fill_statistics_stay_standard_normal_under_subpixel_pan():
    n, c, h, w = 14, 4, 48, 96
    noise = torch.randn(1, n, c, h, w, generator=torch.Generator().manual_seed(5))
    masks = torch.zeros(1, n, 1, h, w)
    masks[..., 8:40, 30:62] = 1
    fw = const_flow((0.3125 * 8, 0.0), n - 1, h, w)  # 2.5 cells/frame: most of the hole is revealed
    out, unfilled = fill_first_frame_noise(noise, masks, fw, -fw)
    got = (masks[0, 0, 0] > 0) & ~unfilled[0, 0, 0]
    vals = out[0, 0][:, got]
    assert got.sum() > 0.8 * masks[0, 0].sum()
    assert abs(vals.mean().item()) < 0.05 and abs(vals.std().item() - 1) < 0.05
    assert vals.unique().numel() == vals.numel()  # every value a distinct copied sample, none interpolated


def test_noise_fill_rejects_mismatched_shapes():
    noise = torch.zeros(1, 3, 4, 8, 8)
    flows = torch.zeros(1, 2, 2, 8, 8)
    with pytest.raises(InputError, match="masks"):
        fill_first_frame_noise(noise, torch.zeros(1, 3, 1, 8, 4), flows, flows)
    with pytest.raises(InputError, match="source_latents"):
        fill_first_frame_noise(noise, torch.zeros(1, 3, 1, 8, 8), flows, flows, source_latents=torch.zeros(1, 3, 4, 4, 4))


def _object_over_fixed_hole(f: int = 16, h: int = 96, w: int = 160, radius: int = 24):
    """A panning texture and a large disk moving across the top border of a FIXED hole."""
    import cv2

    from fffvdi.data.synthetic import smooth_texture

    rng, m = np.random.default_rng(3), 40
    tex = smooth_texture(h + 2 * m, w + 2 * m, rng)
    frames = np.empty((f, h, w, 3), np.uint8)
    for t in range(f):
        centre = ((tex.shape[1] / 2 - 0.5) - 1.0 * t, (tex.shape[0] / 2 - 0.5) + 0.8 * t)  # content moves (+1, -0.8)
        frame = cv2.getRectSubPix(tex, (w, h), centre)
        cv2.circle(frame, (int(round(110 - 2.5 * t)), int(round(36 + 0.4 * t))), radius, (190, 53, 62), -1)
        frames[t] = frame
    masks = np.zeros((f, h, w), bool)
    masks[:, 44:84, 30:100] = True
    return frames, masks


def test_fixed_hole_with_an_object_crossing_its_border_is_no_worse_than_telea():
    from fffvdi.propagate.telea import telea_frame
    from fffvdi.flow.completion import build_flow_completer
    from fffvdi.flow.estimators import build_flow_estimator
    from fffvdi.propagate.options import PropagateOptions
    from fffvdi.propagate.video import propagate_video

    frames, masks = _object_over_fixed_hole()
    masked = frames * ~masks[..., None]
    out = np.empty_like(frames)

    def sink(first, block):
        out[first : first + len(block)] = block

    propagate_video(lambda a, b: masked[a:b], lambda a, b: masks[a:b].astype(np.uint8), len(frames), sink,
                    build_flow_estimator("dis"), build_flow_completer("smooth"), PropagateOptions(), progress=False)
    telea = np.stack([telea_frame(masked[t], masks[t].astype(np.uint8), 3) for t in range(len(frames))])  # uint8 too
    err = lambda x: float(((x[masks].astype(float) - frames[masks]) ** 2).mean())  # noqa: E731
    # Once README's known limitation (813 against Telea's 625 with propagate.layers=null): the disk's pixels at the
    # hole's border are another layer, left out of the completed flow and never landed on (507 measured).
    assert err(out) <= 0.9 * err(telea), (err(out), err(telea))
