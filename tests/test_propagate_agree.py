"""How `propagate` combines a hole pixel's past and future landings: `propagate.combine` mixes them, and with
`propagate.agree` a pixel whose two landings read clearly different colours is left to the spatial fill, since one of
the two came along a wrong flow and nothing tells which."""
import numpy as np
import pytest

from fffvdi.errors import ConfigError
from fffvdi.propagate.clip import propagate_inpaint
from fffvdi.propagate.options import PropagateOptions
from fffvdi.propagate.pixels import fill_points, propagate_clip
from fffvdi.flow.trace import records_from_clip

GREY = 100.0


def _switch(past: tuple, future: tuple, f: int = 3, size: int = 24, hidden: tuple = ()):
    """A still grey scene whose patch [8:16, 8:16] shows `past` before frame f//2 and `future` after it, hidden in
    frame f//2 and the frames `hidden`: (frames [F, H, W, 3] float, masks [F, H, W] bool, zero flows [F-1, 2, H, W])."""
    frames = np.full((f, size, size, 3), GREY)
    masks = np.zeros((f, size, size), bool)
    for t in (f // 2, *hidden):
        masks[t, 6:18, 6:18] = True
    for t in range(f):
        if not masks[t].any():
            frames[t, 8:16, 8:16] = past if t < f // 2 else future
    zeros = np.zeros((f - 1, 2, size, size), np.float32)
    return frames, masks, zeros


@pytest.mark.parametrize("future,agree,filled", [
    ((0, 0, 200), None, True),  # off: the two landings are mixed (a tie in distance)
    ((0, 0, 200), 50.0, False),  # 133 levels apart: neither is trusted
    ((190, 10, 0), 50.0, True),  # 10 levels apart: both kept
    ((0, 0, 200), 140.0, True),  # a looser limit keeps them
])
def test_points_whose_two_landings_disagree_are_not_filled(future, agree, filled):
    frames, masks, zeros = _switch((200, 0, 0), future)
    records = records_from_clip(masks, zeros, zeros, np.where(masks[..., None], 0, frames).astype(np.float32))
    ys, xs = np.array([11, 12]), np.array([11, 12])
    vals, ok, _ = fill_points(records, (24, 24), 1, ys, xs, radius=2, agree=agree)
    assert ok.tolist() == [filled, filled]
    if filled:
        np.testing.assert_allclose(vals[0], (np.array((200, 0, 0)) + future) / 2, atol=1e-3)


def test_one_sided_landings_are_never_judged():
    frames, masks, zeros = _switch((200, 0, 0), (0, 0, 200), f=2)  # hidden in the last frame: the past alone shows it
    records = records_from_clip(masks, zeros, zeros, np.where(masks[..., None], 0, frames).astype(np.float32))
    vals, ok, _ = fill_points(records, (24, 24), 1, np.array([12]), np.array([12]), radius=2, agree=1.0)
    assert ok.all() and np.allclose(vals[0], (200, 0, 0), atol=1e-3)


def test_propagate_clip_passes_agree_and_leaves_the_pixels_unfilled():
    frames, masks, zeros = _switch((200, 0, 0), (0, 0, 200))
    out, unfilled = propagate_clip(frames, masks, zeros, zeros, agree=50.0)
    assert unfilled[1, 8:16, 8:16].all() and not unfilled[1][masks[1]].all()  # the grey ring still propagates
    out, unfilled = propagate_clip(frames, masks, zeros, zeros)
    assert not unfilled[1].any() and np.allclose(out[1, 12, 12], (100, 0, 100))


def _textured(frames: np.ndarray) -> np.ndarray:
    """uint8 frames with fixed noise on the grey background, so that the estimated flow is the true (zero) one."""
    noise = np.random.default_rng(0).integers(-20, 21, frames.shape[1:3])[None, :, :, None]
    return np.clip(frames + np.where((frames == GREY).all(-1, keepdims=True), noise, 0), 0, 255).astype(np.uint8)


def test_the_option_reaches_the_video_method():
    frames, masks, _ = _switch((200, 0, 0), (0, 0, 200), f=5)
    frames = _textured(frames)
    mixed, _ = propagate_inpaint(frames, masks, options=PropagateOptions(agree=None))
    judged, unfilled = propagate_inpaint(frames, masks, options=PropagateOptions(agree=50.0))
    assert unfilled[2, 8:16, 8:16].all()
    centre = (2, slice(10, 14), slice(10, 14))
    assert np.abs(mixed[centre].astype(float) - (100, 0, 100)).max() <= 2  # a purple mix nobody saw
    assert np.abs(judged[centre].astype(float) - GREY).max() < 20  # the grey surroundings, filled spatially


@pytest.mark.parametrize("combine,expected", [("weighted", (100, 100, 100)), ("nearest", (130, 100, 100))])
def test_combine_reaches_the_video_method(combine, expected):
    # frame 2 is hidden in frames 2 and 3: the past shows it 1 frame away, the future 2 frames away (in agreement)
    frames, masks, _ = _switch((130, 100, 100), (40, 100, 100), f=5, hidden=(3,))
    out, unfilled = propagate_inpaint(_textured(frames), masks, options=PropagateOptions(combine=combine))
    assert not unfilled[2, 8:16, 8:16].any()
    assert np.abs(out[2, 10:14, 10:14].astype(float) - expected).max() <= 2  # weighted: (130 / 1 + 40 / 2) / 1.5


def test_agree_must_be_non_negative():
    with pytest.raises(ConfigError, match="propagate.agree=-1 must be >= 0"):
        PropagateOptions(agree=-1)
