"""The real-footage benchmark's case builders and scoring, on synthetic frames (the opencv-doc clips are not needed)."""
import numpy as np
import pytest

import fffvdi.bench.footage as footage
from fffvdi.bench.footage import FootageCase, box_masks, paste_object
from fffvdi.bench import measure as bm
from fffvdi.bench import video as bench_video
from fffvdi.bench.footage_score import SOURCE_ERODE, ceiling, hole_ewarp, score_case, true_flows
from fffvdi.propagate.telea import telea_frame
from fffvdi.errors import InputError
from fffvdi.propagate.options import PropagateOptions
from synthetic_video import translating_frames


@pytest.mark.parametrize("kind, speed", [("cross2", 2), ("cross6", 6), ("fixed", 0)])
def test_box_masks_move_at_their_speed(kind, speed):
    masks = box_masks(kind, 10, (60, 128))
    cols = [np.flatnonzero(m.any(0)) for m in masks]
    assert all(len(c) == 128 // 8 for c in cols)  # 1/8 of the width
    assert [c[0] - cols[0][0] for c in cols] == [speed * t for t in range(10)]


def test_pasted_object_has_its_soft_edge_outside_the_mask():
    clip = np.zeros((5, 60, 100, 3), np.uint8)
    alpha = np.zeros((20, 12), np.float32)
    alpha[4:16, 4:8] = 1.0
    alpha[3, 4:8] = 0.3  # the soft edge
    out, masks = paste_object(clip, np.full((20, 12, 3), 200, np.uint8), alpha)
    assert masks.sum(axis=(1, 2)).tolist() == [48] * 5
    assert ((out > 0).any(-1) & ~masks).any()  # halo pixels outside the mask, as a real segmentation leaves them
    assert len({tuple(np.argwhere(m)[0]) for m in masks}) == 5  # it moves


def _pan_case(kind: str = "cross6") -> FootageCase:
    truth = translating_frames((2, 0), 8, (48, 96))  # a textured pan, 2 px/frame: the flow carries the content
    masks = box_masks(kind, 8, (48, 96))
    return FootageCase(f"pan-{kind}-48x96", np.where(masks[..., None], 0, truth), truth, masks)


def test_score_case_reports_every_column_on_the_users_mask():
    row = score_case(_pan_case())
    assert set(row) >= {"propagate", "dilate0", "telea", "ceiling", "s_per_frame"}
    assert row["ceiling"] > row["telea"] + 5 and row["propagate"] > row["telea"] + 5  # the pan reveals the hole


def test_ceiling_fills_what_no_frame_reveals_with_the_methods_spatial_filler():
    truth = translating_frames((0, 0), 4, (48, 96))  # a still scene behind a fixed box: nothing is ever revealed
    masks = box_masks("fixed", 4, (48, 96))
    case = FootageCase("still-fixed-48x96", np.where(masks[..., None], 0, truth), truth, masks)
    outs = {}
    for spatial in ("telea", "membrane"):
        outs[spatial] = ceiling(case, masks, true_flows(truth), PropagateOptions(spatial=spatial))
        assert (outs[spatial][2] == telea_frame(case.frames[2], masks[2], 3, spatial)).all()
    assert not (outs["telea"] == outs["membrane"]).all()


def test_hole_ewarp_is_zero_for_content_moving_with_the_flow_and_sees_flicker():
    case = _pan_case("fixed")
    flows = true_flows(case.truth)
    steady = hole_ewarp(case.truth, case.masks, flows)
    flicker = case.truth.copy()
    flicker[1::2][case.masks[1::2]] = 0  # every other frame's hole goes black
    assert steady < 1e-3 < hole_ewarp(flicker, case.masks, flows)


def test_benchmark_section_reports_each_footage_case(monkeypatch):
    monkeypatch.setattr(bench_video, "find_footage", lambda: "root")
    monkeypatch.setattr(bench_video, "footage_cases", lambda root, frames, sizes: [_pan_case("fixed")][: frames])
    rep = bm.Report()
    args = type("Args", (), dict(footage_sizes="240x432", footage_frames=8))()
    bench_video.bench_footage(args, rep)
    row = rep.results["propagate"]["footage_pan-fixed-48x96"]
    assert row["unit"] == "dB" and row["value"] == score_case(_pan_case("fixed"))["propagate"]
    assert {"telea", "ceiling", "dilate0", "ewarp_ratio"} <= set(row)
    args.footage_options = "unrevealed=carry,trust=2"
    bench_video.bench_footage(args, rep := bm.Report())
    row = rep.results["propagate"]["footage_pan-fixed-48x96"]
    opts = PropagateOptions(unrevealed="carry", trust=2.0, source_erode=SOURCE_ERODE)  # inference's ring, unless given
    assert row["options"] == "unrevealed=carry,trust=2" and row["value"] == score_case(_pan_case("fixed"), opts)["propagate"]
    args.footage_sizes = ""
    bench_video.bench_footage(args, rep := bm.Report())
    assert rep.results == {}


def test_missing_footage_without_apt_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(footage, "DOC", tmp_path / "nowhere")
    monkeypatch.setattr(footage.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="opencv-doc"):
        footage.find_footage(tmp_path / "cache")


def test_columns_follow_the_landing_rule_of_inference():
    # propagate and the ceiling read the outer ring of mask.dilate as inference does; dilate0 has no ring.
    from fffvdi.bench.footage_score import DILATE
    from fffvdi.data.motion_scenes import masked_psnr
    from fffvdi.io.masks import dilate_mask
    from fffvdi.propagate.clip import propagate_inpaint

    case = _pan_case("fixed")
    dilated = np.stack([dilate_mask(m.astype(np.uint8), DILATE) for m in case.masks]) > 0
    score = lambda out: round(masked_psnr(out, case.truth, case.masks), 2)  # noqa: E731
    row = score_case(case, columns=("propagate", "dilate0", "ceiling"))
    assert SOURCE_ERODE == 2
    assert row["propagate"] == score(propagate_inpaint(case.frames, dilated, options=PropagateOptions(source_erode=2))[0])
    assert row["dilate0"] == score(propagate_inpaint(case.frames, case.masks)[0])
    flows = true_flows(case.truth)
    near, far = (ceiling(case, dilated, flows, PropagateOptions(source_erode=k)) for k in (2, 0))
    assert row["ceiling"] == score(near) and score(near) > score(far)


def test_ceiling_shares_the_methods_agree_and_combine_rules(monkeypatch):
    # the ceiling is the method's tracing with the true flow: the same rules for the two directions' landings
    import fffvdi.bench.footage_score as fs

    case = _pan_case("fixed")
    seen, real = [], fs.propagate_clip
    monkeypatch.setattr(fs, "propagate_clip", lambda *a, **k: seen.append((k["agree"], k["combine"])) or real(*a, **k))
    flows = true_flows(case.truth)
    for agree, combine in ((33.0, "nearest"), (None, "weighted")):
        ceiling(case, case.masks, flows, PropagateOptions(agree=agree, combine=combine))
    assert seen == [(33.0, "nearest"), (None, "weighted")]


def test_fixed_boxes_report_the_flicker_of_never_revealed_pixels_apart():
    from fffvdi.bench.footage_score import DILATE
    from fffvdi.io.masks import dilate_mask
    from fffvdi.propagate.clip import propagate_inpaint

    truth = translating_frames((0, 0), 4, (48, 96))  # a still scene behind a fixed box: nothing is ever revealed
    masks = box_masks("fixed", 4, (48, 96))
    still = FootageCase("still-fixed-48x96", np.where(masks[..., None], 0, truth), truth, masks)
    still = score_case(still, columns=("propagate",))
    assert still["ewarp_unrevealed"] == still["ewarp_ratio"]
    case = _pan_case("fixed")  # a pan reveals part of the box: those pixels are left out of the second ratio
    row = score_case(case, columns=("propagate",))
    dilated = np.stack([dilate_mask(m.astype(np.uint8), DILATE) for m in case.masks]) > 0
    out, unfilled = propagate_inpaint(case.frames, dilated, options=PropagateOptions(source_erode=SOURCE_ERODE))
    where = case.masks & unfilled
    assert where.any() and not where[:-1].all()
    flows = true_flows(case.truth)
    assert row["ewarp_unrevealed"] == round(hole_ewarp(out, where, flows) / hole_ewarp(case.truth, where, flows), 2)
    assert row["ewarp_unrevealed"] != row["ewarp_ratio"]


def test_ceiling_fills_against_each_frames_own_ring_as_the_method_does():
    # a still ramp whose exposure alternates by 30 levels behind a fixed hole grown by 4 (outer 2 px readable)
    from fffvdi.propagate.holes import source_hole

    yy, xx = np.mgrid[:32, :32]
    ramp = np.repeat((40 + 3 * xx + 2 * yy)[..., None], 3, -1)
    truth = np.stack([ramp + 30 * (t % 2) for t in range(4)]).astype(np.uint8)
    masks = np.zeros((4, 32, 32), bool)
    masks[:, 8:24, 10:22] = True
    inner = source_hole(masks[0], 2)
    case = FootageCase("ramp-fixed-32x32", np.where(inner[None, ..., None], 0, truth), truth, masks)
    zeros = np.zeros((3, 2, 32, 32), np.float32)
    out = ceiling(case, masks, (zeros, zeros), PropagateOptions(source_erode=2))
    assert np.abs(out[:, inner].astype(int) - truth[:, inner]).max() <= 1  # the ring propagated is 30 levels off
