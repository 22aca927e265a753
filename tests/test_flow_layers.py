"""Motion layers at a fixed hole's border (`fffvdi.flow.layers`, `propagate.layers`): the hole's flow comes from the
border's dominant motion, not from a blend with an object passing by."""
import numpy as np
import pytest
import torch

from fffvdi.flow.completion import SmoothCompleter
from fffvdi.flow.layers import border_layers, occluders, pair_layers
from fffvdi.propagate.clip import propagate_inpaint
from fffvdi.propagate.telea import telea_inpaint
from fffvdi.propagate.options import PropagateOptions


def _zoom_with_a_passer(h: int = 64, w: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A zoom flow field `[2, H, W]` (affine), a fixed hole, and a patch above it moving at (+4, 0) px/frame."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    flow = np.stack([0.03 * (xs - w / 2), 0.03 * (ys - h / 2)])  # zoom about the centre
    hole = np.zeros((h, w), bool)
    hole[24:44, 28:56] = True
    passer = np.zeros((h, w), bool)
    passer[14:24, 30:42] = True  # touches the hole's top edge
    flow[:, passer] = np.array([4.0, 0.0])[:, None]
    return flow, hole, passer


def test_border_layers_finds_the_passing_patch_and_only_it():
    flow, hole, passer = _zoom_with_a_passer()
    other, ring = border_layers(flow, hole, hole, band=8, tol=1.0)
    assert (other == (passer & ring)).all()  # exactly the passer's pixels within the band
    assert other.sum() == passer[16:24].sum()  # band 8 above the hole's top row 24
    assert ring.sum() > 10 * other.sum() and not (ring & hole).any()


def test_border_layers_leaves_a_moving_hole_alone():
    flow, hole, _ = _zoom_with_a_passer()
    moved = np.roll(hole, 2, axis=1)  # the other frame's hole has moved 2 px: 2 of 28 columns uncovered
    other, ring = border_layers(flow, hole, moved, band=8, tol=1.0)
    assert not other.any() and not ring.any()


def test_completion_with_layers_ignores_the_passer_and_recovers_the_zoom():
    flow, hole, passer = _zoom_with_a_passer()
    truth = flow.copy()
    ys, xs = np.mgrid[0:64, 0:80].astype(np.float64)
    truth[:, passer] = np.stack([0.03 * (xs - 40), 0.03 * (ys - 32)])[:, passer]  # the zoom under the passer
    f = torch.from_numpy(flow).float()[None, None]  # [1, 1, 2, H, W]
    masks = torch.from_numpy(np.stack([hole, hole]).astype(np.float32))[None, :, None]  # [1, 2, 1, H, W]
    completer = SmoothCompleter(dilation=0, iters=200)
    plain, _ = completer.complete_pair(f, f, masks)
    ignore = tuple(torch.from_numpy(o)[None, None, None] for o in pair_layers(flow, flow, hole, hole, 1.0))
    layered, _ = completer.complete_pair(f, f, masks, ignore=ignore)
    err = lambda x: np.abs(x[0, 0].numpy() - truth)[:, hole].max()  # noqa: E731
    assert err(plain) > 1.0  # the blend: the passer's motion leaks deep into the hole
    assert err(layered) < 0.05  # harmonic fill of the zoom's own border is the zoom
    out = layered[0, 0].numpy()
    assert np.array_equal(out[:, ~hole], flow[:, ~hole].astype(np.float32))  # the passer keeps its own flow


def _object_passing_a_fixed_hole():
    """A still textured scene, a fixed hole, and a bright patch sliding past 6 px above it (never behind it)."""
    from fffvdi.data.synthetic import smooth_texture

    f, h, w = 12, 96, 128
    frames = np.repeat(smooth_texture(h, w, np.random.default_rng(0))[None], f, 0)
    patch = np.clip(smooth_texture(16, 16, np.random.default_rng(1)).astype(int) + 60, 0, 255).astype(np.uint8)
    for t in range(f):
        frames[t, 20:36, 20 + 6 * t : 36 + 6 * t] = patch
    masks = np.zeros((f, h, w), bool)
    masks[:, 42:70, 44:84] = True
    return frames, masks


def test_propagate_does_not_drag_a_passing_object_into_a_fixed_hole():
    # Behind a fixed hole in a still scene nothing is ever revealed: whatever propagation copies in is dragged.
    frames, masks = _object_passing_a_fixed_hole()
    err = lambda x: float(((x[masks].astype(float) - frames[masks]) ** 2).mean())  # noqa: E731
    telea = err(telea_inpaint(frames * ~masks[..., None], masks))
    out, unfilled = propagate_inpaint(frames, masks)  # the default: propagate.layers=1
    blend, blend_unfilled = propagate_inpaint(frames, masks, options=PropagateOptions(layers=None))
    assert unfilled[masks].mean() > 0.95 and blend_unfilled[masks].mean() < 0.9
    assert err(out) < 0.9 * err(blend) and err(out) < 0.9 * telea


@pytest.mark.parametrize("tol", [1.0, None])
def test_layers_option_reaches_the_completer_and_the_records(monkeypatch, tol):
    import fffvdi.propagate.video as video
    from fffvdi.flow.trace import FrameRecord

    ignored, others = [], []
    original = SmoothCompleter.complete_pair

    def spy(self, fw, bw, masks, frames=None, ignore=None):
        ignored.append(ignore)
        return original(self, fw, bw, masks, frames, ignore)

    def record(*args, **kwargs):
        rec = FrameRecord(*args, **kwargs)
        others.append(rec.other)
        return rec

    monkeypatch.setattr(SmoothCompleter, "complete_pair", spy)
    monkeypatch.setattr(video, "FrameRecord", record)
    frames, masks = _object_passing_a_fixed_hole()
    propagate_inpaint(frames[:6], masks[:6], options=PropagateOptions(layers=tol))
    if tol is None:
        assert ignored and all(i is None for i in ignored) and all(o is None for o in others)
    else:  # the passer is left out of the fill, and the records know where it is
        assert ignored and all(i is not None for i in ignored) and any(bool(i[0].any()) for i in ignored)
        assert any(o is not None and o.any() for o in others)


def test_occluders_reach_into_the_completed_band_on_the_passers_side():
    hole = np.zeros((40, 60), bool)
    hole[14:26, 20:40] = True
    band = np.zeros_like(hole)
    band[8:32, 14:46] = True  # the flow hole: the hole grown by 6
    other = np.zeros_like(hole)
    other[2:8, 22:30] = True  # a passer just above the band
    occ = occluders(other, band)
    assert occ[other].all() and occ[8:14, 22:30].all()  # the band right below the passer
    assert not occ[26:32].any() and not occ[:, 46:].any() and not occ[:, :14].any()  # the other sides
    assert occluders(np.zeros_like(hole), band) is not None and not occluders(np.zeros_like(hole), band).any()


def test_a_landing_on_the_other_layer_is_occluded():
    from fffvdi.flow.trace import records_from_clip, trace

    f, h, w = 3, 20, 30
    masks = np.zeros((f, h, w), bool)
    masks[:, 5:15, 5:15] = True
    fw = np.zeros((f - 1, 2, h, w), np.float32)
    fw[:, 0] = 8.0  # everything moves 8 px right per frame: a point at x=10 leaves the hole at frame 1 (x=18)
    bw = -fw
    records = records_from_clip(masks, fw, bw)
    ys, xs = np.array([10.0]), np.array([10.0])
    assert trace(records, (h, w), 0, ys, xs, +1, 2, fb_check=False).frame[0] == 1
    records[1].other = np.zeros((h, w), bool)
    records[1].other[10, 18] = True  # a passer at the landing: occluded, the trajectory ends without a source
    assert trace(records, (h, w), 0, ys, xs, +1, 2, fb_check=False).frame[0] == -1


def test_each_record_takes_the_occluders_of_both_its_flows(monkeypatch):
    # Frame k's record is landed on from both sides: it holds the occluders found on its forward flow (pair k, k+1)
    # and on its backward flow (pair k-1, k), in its own crop.
    import fffvdi.propagate.video as video
    from fffvdi.flow.trace import FrameRecord

    found, records = [], []
    real = video.occluders
    monkeypatch.setattr(video, "occluders", lambda other, hole: found.append(real(other, hole)) or found[-1])
    monkeypatch.setattr(video, "FrameRecord", lambda *a, **k: records.append(FrameRecord(*a, **k)) or records[-1])
    frames, masks = _object_passing_a_fixed_hole()
    propagate_inpaint(frames[:6], masks[:6])
    assert len(found) == 10  # 5 pairs: (next of k, prev of k + 1) each
    checked = 0
    for k in range(1, 5):
        rec, prev_side, next_side = records[k], found[2 * k - 1], found[2 * k]
        crop = (slice(rec.top, rec.top + rec.shape[0]), slice(rec.left, rec.left + rec.shape[1]))
        assert np.array_equal(rec.other, prev_side[crop] | next_side[crop])
        checked += int((prev_side[crop] != next_side[crop]).any())
    assert checked  # the two sides differ somewhere
    ends = (records[0], found[0]), (records[5], found[9])  # the first frame has only a next pair, the last a previous
    for rec, side in ends:
        crop = (slice(rec.top, rec.top + rec.shape[0]), slice(rec.left, rec.left + rec.shape[1]))
        assert side[crop].any() and np.array_equal(rec.other, side[crop])


def test_pair_layers_judges_each_flow_against_the_other_frames_hole():
    # A hole growing in from the image edge: frame t's hole is covered by frame t+1's (judged: the forward flow,
    # on t's grid), but t+1's uncovers pixels in frame t (moving: the backward flow is left alone).
    flow, _, passer = _zoom_with_a_passer()
    hole_t = np.zeros(passer.shape, bool)
    hole_t[24:44, 0:30] = True
    hole_next = np.zeros_like(hole_t)
    hole_next[24:44, 0:36] = True
    passer = np.zeros_like(hole_t)
    passer[14:24, 4:16] = True
    flow = flow.copy()
    flow[:, passer] = np.array([4.0, 0.0])[:, None]
    other_fw, other_bw = pair_layers(flow, flow, hole_t, hole_next, 1.0)
    assert other_fw[passer].any() and not other_bw.any()


def test_propagate_hands_each_flow_its_own_frames_hole(monkeypatch):
    import fffvdi.propagate.video as video
    from fffvdi.propagate.holes import grow_hole

    seen = []
    monkeypatch.setattr(video, "pair_layers",
                        lambda fw, bw, hf, hb, tol: seen.append((hf, hb)) or (np.zeros_like(hf), np.zeros_like(hb)))
    frames, masks = _object_passing_a_fixed_hole()
    masks = masks.copy()
    masks[1, 42:70, 84:90] = True  # frame 1's hole is wider than frame 0's
    propagate_inpaint(frames[:2], masks[:2])
    hf, hb = seen[0]
    assert np.array_equal(hf, grow_hole(masks[0], 8)) and np.array_equal(hb, grow_hole(masks[1], 8))


def test_a_completer_that_ignores_the_border_gets_no_layers(monkeypatch):
    # ProPainter completes from the whole sequence (from_border=False): no layers are judged, no landing rule.
    import fffvdi.propagate.video as video

    class WholeSequence(SmoothCompleter):
        from_border = False

    calls = []
    monkeypatch.setattr(video, "pair_layers", lambda *a: calls.append(1))
    frames, masks = _object_passing_a_fixed_hole()
    out, _ = propagate_inpaint(frames[:4], masks[:4], completer=WholeSequence())
    blend, _ = propagate_inpaint(frames[:4], masks[:4], options=PropagateOptions(layers=None))
    assert not calls and np.array_equal(out, blend)
