"""Pixels that no frame shows are filled spatially against the frame's own readable ring (`fill_unrevealed`): the
outer `source_erode` px of a hole grown by mask.dilate are read in every other frame, so the fill of what lies
inside them is bordered by this frame's values there, not by what was propagated onto the ring from other frames."""
import numpy as np
import torch

from fffvdi.flow.estimators import FlowEstimator
from fffvdi.propagate.clip import propagate_inpaint
from fffvdi.propagate.holes import source_hole
from fffvdi.propagate.options import PropagateOptions
from fffvdi.propagate.telea import fill_unrevealed, telea_frame

SIZE = 32


def _ramp(offset: float = 0.0) -> np.ndarray:
    """A linear ramp `[H, W, 3]` uint8 (a membrane fill rebuilds it exactly from any closed border)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    ramp = 40 + 3 * xx + 2 * yy + offset
    return np.repeat(ramp[..., None], 3, -1).clip(0, 255).astype(np.uint8)


def _hole() -> np.ndarray:
    hole = np.zeros((SIZE, SIZE), bool)
    hole[8:24, 10:22] = True  # a mask grown by 4; its outer 2 px are readable
    return hole


def test_the_inner_fill_meets_the_frames_own_ring():
    frame, hole = _ramp(), _hole()
    inner = source_hole(hole, 2)
    result = frame.copy()
    result[hole & ~inner] = _ramp(30)[hole & ~inner]  # the ring as propagated from brighter frames
    result[inner] = 0
    own = fill_unrevealed(result, frame, hole, inner, inner)
    assert np.abs(own[inner].astype(int) - frame[inner]).max() <= 1  # the ramp, rebuilt from the frame's own ring
    bordered_by_propagated = telea_frame(result, inner, method="membrane")
    assert np.abs(bordered_by_propagated[inner].astype(int) - frame[inner]).mean() > 15  # the test can fail
    assert (own[hole & ~inner] == result[hole & ~inner]).all()  # the propagated ring itself is kept


def test_ring_pixels_left_are_filled_not_copied_from_the_frame():
    frame, hole = _ramp(), _hole()
    inner = source_hole(hole, 2)
    frame[12, 10] = 255  # a halo pixel on the ring that no frame replaced
    rest = inner.copy()
    rest[12, 10] = True
    out = fill_unrevealed(frame.copy(), frame, hole, rest, inner)
    assert abs(int(out[12, 10, 0]) - int(_ramp()[12, 10, 0])) <= 12  # filled from its neighbours, not the 255
    assert np.abs(out[inner].astype(int) - _ramp()[inner]).max() <= 8  # the halo only borders the inner fill


def test_without_a_readable_ring_it_is_one_spatial_fill():
    frame, hole = _ramp(), _hole()
    frame[hole] = 0
    for method in ("membrane", "telea"):
        expected = telea_frame(frame, hole, 3, method)
        assert (fill_unrevealed(frame, frame, hole, hole, None, 3, method) == expected).all()


class _Still(FlowEstimator):
    """Zero flow: the scene does not move, only its exposure flickers."""

    def estimate(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, f, _, h, w = frames.shape
        zeros = torch.zeros(b, f - 1, 2, h, w)
        return zeros, zeros.clone()


def test_the_video_method_fills_against_each_frames_own_ring():
    # A still ramp whose exposure alternates by 30 levels; the hole never moves, so nothing inside the source hole
    # is ever revealed and the ring is propagated from the neighbours (30 levels off).
    frames = np.stack([_ramp(30 * (t % 2)) for t in range(5)])
    masks = np.stack([_hole()] * 5)
    out, unfilled = propagate_inpaint(frames, masks, flow=_Still(), options=PropagateOptions(source_erode=2))
    inner = source_hole(_hole(), 2)
    assert unfilled[:, inner].all()
    for t in range(5):
        assert np.abs(out[t][inner].astype(int) - frames[t][inner]).mean() < 3, t
