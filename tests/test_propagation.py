"""Hard-fill propagation, flow/mask resizing and first-frame noise filling on synthetic known motion."""
import pytest
import torch

from fffvdi.errors import InputError
from fffvdi.flow.completion import build_flow_completer
from fffvdi.flow.estimators import DISFlow
from fffvdi.noise_fill import fill_first_frame_noise
from fffvdi.propagation.hard_fill import hard_fill, resize_flows_and_masks
from synthetic_video import H, W, const_flow, translating_video


def box_masks(n_frames, y0=22, y1=42, x0=38, x1=58, h=H, w=W):
    m = torch.zeros(1, n_frames, 1, h, w)
    m[..., y0:y1, x0:x1] = 1
    return m


def psnr(a, b):
    return (10 * torch.log10(1.0 / (a - b).pow(2).mean())).item()


def frame0_psnr(out, video, rem, masks):
    revealed = (masks[0, 0, 0] > 0) & (rem[0, 0, 0] < 0.5)
    return psnr(out[0, 0][:, revealed], video[0, 0][:, revealed]), (revealed.sum() / masks[0, 0].sum()).item()


def test_hard_fill_true_integer_flow_is_exact_and_keeps_known_pixels():
    video = translating_video((3.0, -2.0))
    masks = box_masks(8)
    x = video * (1 - masks)
    out, rem = hard_fill(x, masks, const_flow((3.0, -2.0), 7), const_flow((-3.0, 2.0), 7))
    assert out.shape == x.shape and rem.shape == masks.shape
    p, _ = frame0_psnr(out, video, rem, masks)
    assert rem[0, 0].sum() == 0 and p > 60, p  # 20x20 hole, 3 px/frame: fully revealed, copied exactly
    known = (masks == 0).expand_as(x)
    assert torch.equal(out[known], x[known])


def test_hard_fill_with_dis_flow_recovers_frame0():
    video = translating_video((3.0, -2.0))
    masks = box_masks(8)
    x = video * (1 - masks)
    flat = x + masks * 0.5  # the flow sees a grey hole: wrong flow there, fixed by completion
    fw, bw = build_flow_completer("smooth").complete_pair(*DISFlow()(flat), masks)
    out, rem = hard_fill(x, masks, fw, bw)
    p, frac = frame0_psnr(out, video, rem, masks)
    assert frac > 0.5 and p > 35, (p, frac)  # measured 40.8 dB on 84 % of the hole


def test_hard_fill_true_subpixel_flow():
    video = translating_video((1.5, 0.5))
    masks = box_masks(8)
    out, rem = hard_fill(video * (1 - masks), masks, const_flow((1.5, 0.5), 7), const_flow((-1.5, -0.5), 7))
    p, frac = frame0_psnr(out, video, rem, masks)
    assert frac > 0.2 and p > 35, (p, frac)  # chained bilinear sampling; measured ~38 dB


def test_hole_moving_with_content_and_out_of_view_stay_unfilled():
    shift = (3, -2)
    n = 6
    masks = torch.zeros(1, n, 1, H, W)
    for t in range(n):  # the hole travels with the content: no frame ever shows what is under it
        masks[0, t, 0, 30 + shift[1] * t : 40 + shift[1] * t, 20 + shift[0] * t : 30 + shift[0] * t] = 1
    x = translating_video(shift, n) * (1 - masks)
    fw, bw = const_flow(shift, n - 1), const_flow((-3.0, 2.0), n - 1)
    out, rem = hard_fill(x, masks, fw, bw)
    assert torch.equal(rem, masks)
    assert torch.equal(out, x)
    edge = torch.zeros(1, n, 1, H, W)
    edge[0, 0, 0, :, W - 3 :] = 1  # content there leaves the view (moves right) and nothing came before
    _, rem = hard_fill(x, edge, fw, bw)
    assert torch.equal(rem, edge)


def test_hard_fill_no_leak_from_hole_sources():
    # Frame 1 is fully masked and frame 0 partly: frame 0 must not take frame 1's (unknown) values.
    x = torch.rand(1, 2, 3, 16, 16)
    masks = torch.zeros(1, 2, 1, 16, 16)
    masks[:, 1] = 1
    masks[:, 0, :, 4:8, 4:8] = 1
    out, rem = hard_fill(x, masks, const_flow((0.5, 0.0), 1, 16, 16), const_flow((-0.5, 0.0), 1, 16, 16))
    assert torch.equal(rem[:, 0], masks[:, 0])
    assert torch.equal(out[:, 0], x[:, 0])
    with pytest.raises(InputError):
        hard_fill(x, masks[:, :1], const_flow((0, 0), 1, 16, 16), const_flow((0, 0), 1, 16, 16))


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
