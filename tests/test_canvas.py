"""Canvas placement (resize with aspect kept + pad), the way back, and compositing."""
import numpy as np
import pytest
import torch

from fffvdi.inpaint.canvas import composite, feather_alpha, from_canvas, plan_placement, to_canvas


def test_placement_keeps_aspect_and_pads_never_crops():
    p = plan_placement((239, 427), (256, 512))
    top, left, h, w = p.box
    assert h == 256 and abs(h / w - 239 / 427) < 0.01  # the height limits: it fills, the width is padded
    assert top == 0 and left == (512 - w) // 2 and w < 512
    tall = plan_placement((600, 300), (576, 1024)).box
    assert tall[2] == 576 and tall[3] == 288 and tall[1] == (1024 - 288) // 2
    with pytest.raises(ValueError, match="multiple of 8"):
        plan_placement((10, 10), (60, 64))


def test_round_trip_recovers_smooth_frames():
    y, x = np.mgrid[0:39, 0:67]
    img = torch.tensor(np.stack([np.sin(x / 9.0), np.cos(y / 7.0), np.sin((x + y) / 11.0)]), dtype=torch.float32)
    video = img[None, None].repeat(1, 2, 1, 1, 1)  # [1, 2, 3, 39, 67]
    place = plan_placement((39, 67), (64, 128))
    canvas = to_canvas(video, place)
    assert canvas.shape == (1, 2, 3, 64, 128)
    back = from_canvas(canvas, place)
    assert back.shape == video.shape and (back - video).abs().max() < 0.05


def test_mask_padding_is_known_and_nearest():
    mask = torch.zeros(1, 1, 1, 30, 60)
    mask[..., 10:20, 20:40] = 1
    canvas = to_canvas(mask, plan_placement((30, 60), (64, 64)), nearest=True)
    assert set(canvas.unique().tolist()) <= {0.0, 1.0}
    assert canvas[..., :8, :].sum() == 0  # padding rows are "known"


def test_feather_ramps_inside_only_and_composite_keeps_outside():
    masks = np.zeros((1, 21, 21), np.uint8)
    masks[0, 5:16, 5:16] = 1
    alpha = feather_alpha(masks, 3)
    assert np.all(alpha[masks == 0] == 0)
    assert alpha[0, 10, 10] == 1.0 and 0 < alpha[0, 5, 10] < 1  # centre fully generated, edge blended
    orig = np.full((1, 21, 21, 3), 10, np.uint8)
    gen = np.full((1, 21, 21, 3), 250, np.uint8)
    out = composite(orig, gen, masks, feather=3)
    assert np.array_equal(out[masks == 0], orig[masks == 0])
    assert out[0, 10, 10, 0] == 250 and 10 < out[0, 5, 10, 0] < 250
    hard = composite(orig, gen, masks, feather=0)
    assert np.array_equal(hard[masks == 1], gen[masks == 1])


def test_stretch_fills_the_canvas_whatever_the_aspect_and_goes_back():
    place = plan_placement((240, 432), (256, 512), fit="stretch")  # 16:9 onto 2:1, as the release does
    assert place.box == (0, 0, 256, 512)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 240), torch.linspace(0, 1, 432), indexing="ij")
    x = (ys + xs).expand(1, 2, 3, 240, 432) / 2  # smooth, so the way back is close
    canvas = to_canvas(x, place)
    assert canvas.shape == (1, 2, 3, 256, 512)
    torch.testing.assert_close(canvas[..., 0, 0], x[..., 0, 0])  # no padding: the corner pixel is the frame's
    back = from_canvas(canvas, place)
    assert back.shape == x.shape and (back - x).abs().max() < 0.01
    with pytest.raises(ValueError, match="window.fit"):
        plan_placement((240, 432), (256, 512), fit="crop")
