"""`propagate` on what no frame reveals (carried fill, spatial fillers) and its distrust of mixed completed flows."""
import cv2
import numpy as np
import pytest

import fffvdi.propagate.video as video
from fffvdi.errors import ConfigError
from fffvdi.flow.trace import FrameRecord, records_from_clip, trace
from fffvdi.propagate.carry import carry_unrevealed
from fffvdi.propagate.clip import propagate_inpaint
from fffvdi.propagate.telea import telea_frame, telea_inpaint
from fffvdi.propagate.trust import border_spread, trusted
from fffvdi.propagate.options import PropagateOptions
from test_propagation import _object_over_fixed_hole


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture, uint8 `[h, w, 3]`."""
    noise = np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 255, 0, 255).astype(np.uint8)


def test_carried_fill_is_the_previous_frame_moved_along_the_flow():
    # The scene pans 2 px/frame to the right; frame t's hole is filled from frame t-1 read at p + flow_prev(p).
    big = _texture(40, 64)
    previous, current = big[:, 2:62], big[:, :60]  # content at x in t-1 is at x + 2 in t
    hole = np.zeros((40, 60), bool)
    hole[10:30, 20:40] = True
    hole[5:15, 0:3] = True  # near the left edge: its flow leaves the image, so it is left for the spatial fill
    flow_prev = np.zeros((2, 40, 60), np.float32)
    flow_prev[0] = -2.0  # frame t -> t-1
    rec = FrameRecord(0, 0, hole, ~hole, None, flow_prev)
    result = np.where(hole[..., None], 0, current).astype(np.uint8)
    left = carry_unrevealed(result, hole.copy(), previous, rec)
    inner = np.zeros_like(hole)
    inner[10:30, 20:40] = True
    assert np.abs(result[inner].astype(int) - current[inner]).max() <= 1  # the panned texture, exactly
    assert not left[inner].any()
    assert left[5:15, 0:2].all()  # x + flow < 0: nothing to carry from
    assert (result[~hole] == current[~hole]).all()


def test_carried_fill_meets_a_changed_border_without_a_seam():
    # Same frame, lit 20 levels brighter now: the carried patch keeps its gradients and takes the new border.
    tex = _texture(40, 60, seed=1)
    previous = tex
    current = np.clip(tex.astype(int) + 20, 0, 255).astype(np.uint8)
    hole = np.zeros((40, 60), bool)
    hole[12:28, 18:42] = True
    rec = FrameRecord(0, 0, hole, ~hole, None, np.zeros((2, 40, 60), np.float32))
    result = np.where(hole[..., None], 0, current).astype(np.uint8)
    carry_unrevealed(result, hole.copy(), previous, rec)
    assert np.abs(result[hole].astype(int) - current[hole]).max() <= 2  # not the darker copy (off by 20)


def _static_fixed_hole(f: int = 6):
    frames = np.repeat(_texture(48, 64, seed=2)[None], f, 0)
    masks = np.zeros((f, 48, 64), bool)
    masks[:, 14:34, 20:44] = True  # never revealed: nothing moves
    return frames, masks


def test_unrevealed_carry_is_wired_to_the_previous_finished_frame(monkeypatch):
    frames, masks = _static_fixed_hole()
    calls = []
    real = video.carry_unrevealed

    def spy(result, left, previous, rec):
        calls.append(None if previous is None else previous.copy())
        return real(result, left, previous, rec)

    monkeypatch.setattr(video, "carry_unrevealed", spy)
    out, unfilled = propagate_inpaint(frames, masks, options=PropagateOptions(unrevealed="carry"))
    assert len(calls) == len(frames)  # every frame's never-revealed pixels go through it
    assert calls[0] is None  # the key frame: nothing before it, a spatial fill
    for t in range(1, len(frames)):
        assert (calls[t] == out[t - 1]).all()  # the last finished frame, as written
    assert unfilled.all() == masks.all() and unfilled[masks].all()
    assert (out[1:, 14:34, 20:44] == out[0, 14:34, 20:44]).all()  # a still scene: one fill, no flicker
    calls.clear()
    propagate_inpaint(frames, masks)  # the default fills each frame anew
    assert calls == []


def test_spatial_filler_choice_reaches_the_never_revealed_pixels():
    frames, masks = _static_fixed_hole(3)
    telea, _ = propagate_inpaint(frames, masks, options=PropagateOptions(unrevealed="frame", spatial="telea"))
    assert (telea[0] == telea_frame(frames[0] * ~masks[0][..., None], masks[0], 3, "telea")).all()
    ns, _ = propagate_inpaint(frames, masks, options=PropagateOptions(unrevealed="frame", spatial="ns"))
    expect = telea_frame(frames[0] * ~masks[0][..., None], masks[0], 3, "ns")
    assert (ns[0] == expect).all() and not (ns[0] == telea[0]).all()
    membrane, _ = propagate_inpaint(frames, masks)  # the default, measured on the real footage (README)
    assert (membrane[0] == telea_frame(frames[0] * ~masks[0][..., None], masks[0], 3, "membrane")).all()
    assert not (membrane[0] == telea[0]).all()
    with pytest.raises(ConfigError, match="propagate.spatial='fsr' is unknown; use one of telea, ns, membrane"):
        PropagateOptions(spatial="fsr")
    with pytest.raises(ConfigError, match="propagate.unrevealed='keep' is unknown; use one of carry, frame"):
        PropagateOptions(unrevealed="keep")


def test_membrane_fill_is_exact_on_a_shading_ramp_and_keeps_the_known_pixels():
    # A linear ramp is harmonic, so the membrane fill must give it back (to rounding); Telea's streaks do not.
    yy, xx = np.mgrid[0:40, 0:60].astype(np.float64)
    ramp = np.stack([40 + 2 * xx, 30 + 3 * yy, 200 - xx - yy], -1).round().astype(np.uint8)
    hole = np.zeros((40, 60), bool)
    hole[8:30, 15:50] = True
    hole[0:5, 0:6] = True  # a second piece at the image corner: no link past the edge, the known pixels untouched
    filled = telea_frame(np.where(hole[..., None], 0, ramp).astype(np.uint8), hole, 3, "membrane")
    err = np.abs(filled.astype(int) - ramp.astype(int))
    assert err[8:30, 15:50].max() <= 1 and (filled[~hole] == ramp[~hole]).all()
    telea = telea_frame(np.where(hole[..., None], 0, ramp).astype(np.uint8), hole, 3, "telea")
    assert np.abs(telea.astype(int) - ramp.astype(int))[8:30, 15:50].max() > 3


def test_border_spread_measures_disagreement_of_the_flows_around_the_hole():
    hole = np.zeros((30, 30), bool)
    hole[10:20, 10:20] = True
    uniform = np.full((2, 30, 30), 1.5, np.float32)  # a pan: every side agrees
    assert border_spread(uniform, hole).max() == 0
    mixed = np.zeros((2, 30, 30), np.float32)
    mixed[0, :, :10] = 3.0  # something moving 3 px/frame on the left side only
    spread = border_spread(mixed, hole)
    assert np.allclose(spread[hole], 3.0) and (spread[~hole] == 0).all()
    assert not trusted(mixed, hole, 2.0)[hole].any() and trusted(mixed, hole, 3.0).all()


def test_a_distrusted_completed_flow_ends_the_trajectory_without_a_source():
    f, h, w = 2, 20, 20
    masks = np.zeros((f, h, w), bool)
    masks[0, 8:12, 8:12] = True
    fw = np.zeros((1, 2, h, w), np.float32)
    fw[0, 0] = 5.0  # moves out of the (empty) hole of frame 1 anyway
    records = records_from_clip(masks, fw, -fw)
    ys, xs = np.nonzero(masks[0])
    assert trace(records, (h, w), 0, ys, xs, +1, 1).found.all()
    records[0].trusted_next = ~masks[0]
    assert not trace(records, (h, w), 0, ys, xs, +1, 1).found.any()


def _fixed_hole_records(speeds: list[float]):
    """A fixed hole (rows 8-11, columns 4-23 of 20x40) whose completed flow moves right by `speeds[k]` at frame k."""
    f, h, w = len(speeds) + 1, 20, 40
    masks = np.zeros((f, h, w), bool)
    masks[:, 8:12, 4:24] = True
    fw = np.zeros((f - 1, 2, h, w), np.float32)
    fw[:, 0] = np.asarray(speeds, np.float32)[:, None, None]
    return records_from_clip(masks, fw, -fw), (h, w)


@pytest.mark.parametrize("speeds, lands", [
    ([0, 0, 0, 5, 5, 5], False),  # at rest, then picked up by something moving 5 px/frame: a jump
    ([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0], True),  # accelerating smoothly: a real motion
    ([4, 4, 6, 6, 6], True),  # a change of 2 at speed 4: within 1 + 4 / 2
    ([4, 4, 0.5, 0.5, 8, 8], False),  # stopping short (a change of 3.5 at speed 4): dropped by what carried it
])
def test_max_jump_ends_trajectories_whose_flow_jumps(speeds, lands):
    records, size = _fixed_hole_records(speeds)
    ys, xs = np.array([10]), np.array([10])
    assert trace(records, size, 0, ys, xs, +1, len(speeds)).found.all()  # without the test every one lands
    assert trace(records, size, 0, ys, xs, +1, len(speeds), max_jump=1.0).found.all() == lands


def test_max_jump_option_reaches_the_tracer(monkeypatch):
    import fffvdi.propagate.pixels as pixels

    seen = []
    real = pixels.trace
    def spy(*a, **k):
        seen.append(a[9] if len(a) > 9 else k.get("max_jump"))
        return real(*a, **k)

    monkeypatch.setattr(pixels, "trace", spy)
    frames, masks = _static_fixed_hole(3)
    propagate_inpaint(frames, masks, options=PropagateOptions(max_jump=1.5))
    assert seen and set(seen) == {1.5}
    with pytest.raises(ConfigError, match="propagate.max_jump=-1 must be >= 0"):
        PropagateOptions(max_jump=-1)


def test_trust_option_reaches_the_records(monkeypatch):
    # A hole crossing a still scene: with every completed flow distrusted nothing is propagated.
    f, h, w = 6, 40, 64
    frames = np.repeat(_texture(h, w, seed=3)[None], f, 0)
    masks = np.zeros((f, h, w), bool)
    for t in range(f):
        masks[t, 10:26, 8 + 6 * t : 24 + 6 * t] = True
    _, unfilled = propagate_inpaint(frames, masks)
    assert unfilled.sum() < 0.2 * masks.sum()
    seen = []
    monkeypatch.setattr(video, "trusted", lambda flow, hole, limit: seen.append(limit) or ~hole)
    _, unfilled = propagate_inpaint(frames, masks, options=PropagateOptions(trust=0.5))
    assert seen and set(seen) == {0.5}
    assert unfilled[masks].all()


def test_trust_or_layers_keep_a_fixed_hole_beside_a_crossing_object_above_telea():
    # Completed from the whole border (layers=null) the blend drags the crossing disk in: worse than Telea.
    # Distrusting the completed flow where the border disagrees (trust), or the layers default, fixes it.
    frames, masks = _object_over_fixed_hole()
    err = lambda x: float(((x[masks].astype(float) - frames[masks]) ** 2).mean())  # noqa: E731
    telea = err(telea_inpaint(frames * ~masks[..., None], masks))
    assert err(propagate_inpaint(frames, masks, options=PropagateOptions(layers=None))[0]) > 1.2 * telea
    assert err(propagate_inpaint(frames, masks, options=PropagateOptions(layers=None, trust=2.0))[0]) < 0.85 * telea
    assert err(propagate_inpaint(frames, masks)[0]) < 0.85 * telea


def test_propagate_config_section_is_the_options_with_the_same_defaults():
    from dataclasses import asdict

    from fffvdi.config import load_config
    from fffvdi.inpaint.checks import check_inference_config
    from fffvdi.inpaint.config import InferenceConfig, PropagateConfig

    # inference builds PropagateOptions(**section, source_erode=...): source_erode comes from the mask section
    options = asdict(PropagateOptions())
    assert options.pop("source_erode") == 0 and asdict(PropagateConfig()) == options
    cfg = load_config(InferenceConfig, None, ["propagate.unrevealed=carry", "propagate.spatial=ns", "propagate.trust=2",
                                              "propagate.max_jump=1", "propagate.layers=0.5", "propagate.agree=20"])
    check_inference_config(cfg)
    assert PropagateOptions(**cfg.propagate) == PropagateOptions(unrevealed="carry", spatial="ns", trust=2.0, max_jump=1.0,
                                                                  layers=0.5, agree=20.0)
    for bad, key in (("propagate.unrevealed=keep", "propagate.unrevealed"), ("propagate.spatial=fsr", "propagate.spatial"),
                     ("propagate.trust=-1", "propagate.trust"), ("propagate.max_jump=-1", "propagate.max_jump"),
                     ("propagate.layers=-1", "propagate.layers"), ("propagate.agree=-1", "propagate.agree")):
        with pytest.raises(ConfigError, match=key):
            check_inference_config(load_config(InferenceConfig, None, [bad]))
