"""Mask tracking from one annotation: oracle clips (hidden object known), annotations, errors, SAM 2 (tiny, offline)."""
import time

import cv2
import numpy as np
import pytest
from tracking_scene import blob_scene

import fffvdi.tracking.flow_tracker as flow_tracker
from fffvdi.errors import InputError
from fffvdi.tracking import box_mask, read_annotation, track_masks
from fffvdi.tracking.annotation import mask_box, parse_box
from fffvdi.tracking.flow_tracker import cover


@pytest.fixture(scope="module")
def scene():
    """40 frames, 160x256: a wavy textured ellipse moving ~2.8 px/frame and growing to 1.5x over a panning background."""
    return blob_scene(n_frames=40)


def _box_around(obj: np.ndarray, pad: int = 3) -> np.ndarray:
    x, y, w, h = mask_box(obj)
    return box_mask((x - pad, y - pad, w + 2 * pad, h + 2 * pad), obj.shape)


def _scores(masks: np.ndarray, objects: np.ndarray):
    inter = (masks & objects).sum((1, 2))
    area = objects.sum((1, 2))
    return inter / area, masks.sum((1, 2)) / area, inter / (masks | objects).sum((1, 2))


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 20])
def test_flow_tracker_covers_a_moving_growing_object_from_a_box(scene, k):
    frames, objects = scene
    box = _box_around(objects[k])
    assert box.sum() > 1.5 * objects[k].sum()  # the box alone would break the area bound: it must become the object
    t0 = time.process_time()
    masks = track_masks(frames, box, k)
    cpu = time.process_time() - t0
    assert masks.shape == objects.shape and masks.dtype == bool
    coverage, ratio, iou = _scores(masks, objects)
    print(f"\nbox on frame {k}: IoU mean {iou.mean():.3f} min {iou.min():.3f}, coverage min {coverage.min():.4f}, "
          f"area ratio max {ratio.max():.2f}, {cpu:.1f} s CPU")
    assert coverage.min() >= 0.97, np.round(coverage, 3)  # every frame hides (almost) all of the object
    assert ratio.max() <= 1.5, np.round(ratio, 2)
    assert iou.min() >= 0.6


@pytest.mark.slow
def test_flow_tracker_from_a_mask_image_mid_clip_at_reduced_working_size(scene, monkeypatch):
    """A non-box annotation is tracked as drawn; frames above WORK_SIDE are traced small and upscaled."""
    frames, objects = scene[0][10:26], scene[1][10:26]
    monkeypatch.setattr(flow_tracker, "WORK_SIDE", 192)  # 160x256 -> 120x192
    masks = track_masks(frames, objects[8], 8)
    coverage, ratio, iou = _scores(masks, objects)
    print(f"\nmask on frame 8, working size 120x192: IoU mean {iou.mean():.3f} min {iou.min():.3f}")
    assert np.array_equal(masks[8], cover(objects[8]))  # the drawn mask itself, plus the covering margin
    assert coverage.min() >= 0.97 and ratio.max() <= 1.6


def test_a_textureless_object_is_not_lost():
    """Flow inside a plain object is guesswork: traced pixels thin out, the moved previous mask completes them."""
    frames, objects = blob_scene(n_frames=24, flat=True)
    masks = track_masks(frames, _box_around(objects[0]), 0)
    coverage, ratio, iou = _scores(masks, objects)
    print(f"\ntextureless object, box on frame 0: IoU mean {iou.mean():.3f} min {iou.min():.3f}")
    assert coverage.min() >= 0.97 and ratio.max() <= 1.5


def test_completion_gets_the_flow_from_the_previous_frame_toward_this_one(monkeypatch):
    """`_recover` moves the previous object by its median flow prev -> t: fw forward of the annotation, bw before it
    (the template search and the re-fit would hide a flow taken the wrong way on the oracle clips)."""
    seen = []
    original = flow_tracker._recover

    def spy(seed, prev, flow, prev_image, image):
        seen.append(np.median(flow[prev], axis=0))
        return original(seed, prev, flow, prev_image, image)

    monkeypatch.setattr(flow_tracker, "_recover", spy)
    frames, objects = blob_scene(n_frames=7, size=(96, 128), start=(50.0, 40.0), speed=(4.0, 0.0), pan=(0.0, 0.0),
                                 growth=1.0)
    track_masks(frames, objects[3], 3)  # order: frames 4, 5, 6 (forward), then 2, 1, 0 (backward)
    u = np.array(seen)[:, 0]
    assert (np.abs(u[:3] - 4.0) < 1.0).all() and (np.abs(u[3:] + 4.0) < 1.0).all(), np.round(u, 2)


def test_a_fast_object_is_found_again_when_the_flow_loses_it():
    """~14 px/frame at 256 px wide: DIS misses the motion; the template search around the flow's guess finds it."""
    frames, objects = blob_scene(n_frames=12, start=(40.0, 50.0), speed=(14.0, 3.0), growth=1.2)
    masks = track_masks(frames, _box_around(objects[0]), 0)
    coverage, ratio, iou = _scores(masks, objects)
    print(f"\nfast object (14 px/frame), box on frame 0: IoU mean {iou.mean():.3f} min {iou.min():.3f}")
    assert coverage.min() >= 0.97 and ratio.max() <= 1.5


def test_object_pixels_uncovered_behind_the_object_are_not_dragged_along(scene):
    """The colour checks: without them DIS spreads the object's motion into the background it uncovers."""
    frames, objects = scene[0][:16], scene[1][:16]
    masks = track_masks(frames, objects[0], 0)
    _, ratio, _ = _scores(masks, objects)
    assert ratio[-1] <= 1.35


def test_box_mask_values_clipping_and_errors():
    m = box_mask((2, 1, 3, 2), (4, 6))
    expected = np.zeros((4, 6), bool)
    expected[1:3, 2:5] = True
    assert np.array_equal(m, expected)
    assert box_mask((-2, -2, 4, 4), (4, 6)).sum() == 4  # clipped to the frame
    with pytest.raises(InputError, match="outside"):
        box_mask((10, 0, 3, 3), (4, 6))
    with pytest.raises(InputError, match="empty"):
        box_mask((1, 1, 0, 3), (4, 6))
    assert parse_box("40, 30,64,48") == (40, 30, 64, 48)
    with pytest.raises(InputError, match="x,y,w,h"):
        parse_box("40,30,64")


def test_read_annotation_resizes_nearest_and_reads_alpha(tmp_path):
    img = np.zeros((20, 30), np.uint8)
    img[4:10, 6:18] = 255
    cv2.imwrite(str(tmp_path / "m.png"), img)
    m = read_annotation(tmp_path / "m.png", (40, 60))
    assert m.dtype == bool and m.shape == (40, 60)
    assert np.array_equal(m, np.kron(img > 0, np.ones((2, 2), bool)))  # nearest: exact doubling
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = img  # white in the alpha channel only
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert np.array_equal(read_annotation(tmp_path / "a.png", (20, 30)), img > 0)


def test_read_annotation_errors(tmp_path):
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="empty.png is empty"):
        read_annotation(tmp_path / "empty.png", (8, 8))
    with pytest.raises(InputError, match="does not exist"):
        read_annotation(tmp_path / "missing.png", (8, 8))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.png"):
        read_annotation(tmp_path / "bad.png", (8, 8))


def test_track_masks_rejects_bad_input():
    frames = np.zeros((5, 16, 24, 3), np.uint8)
    ann = box_mask((2, 2, 5, 5), (16, 24))
    with pytest.raises(InputError, match="frame 5 is out of range.*5 frames"):
        track_masks(frames, ann, 5)
    with pytest.raises(InputError, match="out of range"):
        track_masks(frames, ann, -1)
    with pytest.raises(InputError, match="annotation is empty"):
        track_masks(frames, np.zeros((16, 24), bool), 0)
    with pytest.raises(InputError, match="16x24"):
        track_masks(frames, np.ones((8, 8), bool), 0)
    with pytest.raises(InputError, match="uint8"):
        track_masks(frames.astype(np.float32), ann, 0)
    with pytest.raises(InputError, match="tracker 'magic' is unknown"):
        track_masks(frames, ann, 0, tracker="magic")


def test_a_single_frame_video_gives_the_annotation_with_its_margin():
    frames = np.random.default_rng(0).integers(0, 255, (1, 32, 48, 3), dtype=np.uint8)
    ann = np.zeros((32, 48), bool)
    cv2.circle(ann.view(np.uint8), (20, 15), 6, 1, -1)
    out = track_masks(frames, ann, 0)
    assert out.shape == (1, 32, 48) and np.array_equal(out[0], cover(ann))
    assert out[0].sum() > ann.sum() and (out[0] & ann).sum() == ann.sum()


# --- SAM 2 (tiny random model, offline) ---


@pytest.fixture(scope="module")
def tiny_sam2_dir(tmp_path_factory):
    from fffvdi.tracking.tiny_sam2 import save_tiny_sam2

    return save_tiny_sam2(tmp_path_factory.mktemp("tiny_sam2"))


def test_tiny_sam2_is_saved_in_the_hub_layout(tiny_sam2_dir):
    names = {p.name for p in tiny_sam2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json"} <= names


@pytest.mark.parametrize("k", [0, 3])
def test_sam2_tracker_uses_the_prompt_mask_on_its_frame(tiny_sam2_dir, k, monkeypatch):
    from transformers import Sam2VideoModel

    passes, original = [], Sam2VideoModel.propagate_in_video_iterator

    def spy(self, session, start_frame_idx, reverse=False, **kw):
        passes.append((start_frame_idx, reverse, []))
        for result in original(self, session, start_frame_idx=start_frame_idx, reverse=reverse, **kw):
            passes[-1][2].append(result.frame_idx)
            yield result

    monkeypatch.setattr(Sam2VideoModel, "propagate_in_video_iterator", spy)
    frames, objects = blob_scene(n_frames=5, size=(48, 80), start=(22.0, 20.0), speed=(2.0, 0.5))
    masks = track_masks(frames, objects[k], k, tracker="sam2", sam2=str(tiny_sam2_dir))
    # forward from the prompt to the end, then (unless it is frame 0) backward to the start: every frame is reached
    assert [(start, rev) for start, rev, _ in passes] == [(k, False)] + ([(k, True)] if k else [])
    assert sorted(set(sum((seen for _, _, seen in passes), []))) == list(range(5))
    assert masks.shape == (5, 48, 80) and masks.dtype == bool
    want = cover(objects[k])
    iou = (masks[k] & want).sum() / (masks[k] | want).sum()
    assert iou > 0.97  # SAM 2 returns a mask prompt as its frame's output (resampled through 128x128)


def test_sam2_tracker_takes_a_box_as_a_box_prompt(tiny_sam2_dir, monkeypatch):
    from transformers import Sam2VideoProcessor

    seen = {}
    original = Sam2VideoProcessor.add_inputs_to_inference_session

    def spy(self, session, frame_idx, obj_ids, **kw):
        seen.update(kw, frame_idx=frame_idx)
        return original(self, session, frame_idx, obj_ids, **kw)

    monkeypatch.setattr(Sam2VideoProcessor, "add_inputs_to_inference_session", spy)
    frames = np.random.default_rng(1).integers(0, 255, (3, 40, 64, 3), dtype=np.uint8)
    masks = track_masks(frames, box_mask((10, 5, 20, 12), (40, 64)), 1, tracker="sam2", sam2=str(tiny_sam2_dir))
    assert masks.shape == (3, 40, 64)
    assert seen["frame_idx"] == 1 and seen["input_boxes"] == [[[10, 5, 29, 16]]]  # x0, y0, x1, y1 inclusive


def test_sam2_missing_model_is_one_line_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    ann = box_mask((2, 2, 6, 6), (16, 16))
    t0 = time.monotonic()
    with pytest.raises(InputError) as err:
        track_masks(frames, ann, 0, tracker="sam2", sam2="facebook/sam2.1-hiera-tiny")
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert "\n" not in msg and "huggingface-cli download facebook/sam2.1-hiera-tiny" in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(InputError, match="does not exist"):
        track_masks(frames, ann, 0, tracker="sam2", sam2=str(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="not a SAM 2 folder.*model.safetensors"):
        track_masks(frames, ann, 0, tracker="sam2", sam2=str(tmp_path / "half"))


def test_clean_drops_specks_fills_holes_and_closes_gaps():
    from fffvdi.tracking.refine import clean

    m = np.zeros((60, 60), bool)
    m[10:40, 10:40] = True
    m[20:25, 20:25] = False  # a hole inside the object
    m[10:40, 25] = False  # a one-pixel crack
    m[50, 50] = True  # a speck
    out = clean(m)
    assert out[11:39, 10:40].all() and not out[45:, 45:].any()  # the crack's two end pixels stay open (closing)


def _two_colours(inside: np.ndarray, seed: int = 0) -> np.ndarray:
    """RGB image: colour A (reddish) on `inside`, B (bluish) elsewhere, a little noise."""
    rng = np.random.default_rng(seed)
    img = np.where(inside[..., None], [200, 60, 40], [40, 80, 200]).astype(np.float32)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def test_refit_snaps_a_slightly_wrong_mask_to_the_object():
    from fffvdi.tracking.refine import refit

    obj = np.zeros((100, 100), bool)
    obj[39:61, 39:61] = True  # 22 x 22
    seed = np.zeros_like(obj)
    seed[41:61, 40:60] = True  # traced 20 x 20, a pixel off
    assert np.array_equal(refit(_two_colours(obj), seed), obj)


def test_refit_keeps_the_seed_when_grabcut_strays_far_in_area():
    """Background of the object's colour right around it: GrabCut swallows the band; the seed is kept instead."""
    from fffvdi.tracking.refine import refit

    seed = np.zeros((100, 100), bool)
    seed[40:60, 40:60] = True
    same = np.zeros_like(seed)
    same[30:70, 30:70] = True  # the object's colour reaches 10 px beyond it
    assert np.array_equal(refit(_two_colours(same), seed), seed)


def test_search_region_grows_with_the_motion():
    prev = np.zeros((100, 200), bool)
    prev[40:50, 90:110] = True
    still = flow_tracker._roi(prev, np.zeros((100, 200, 2), np.float32))
    fast = np.zeros((100, 200, 2), np.float32)
    fast[..., 0] = 10.0
    moving = flow_tracker._roi(prev, fast)
    pad = flow_tracker.ROI_PAD
    assert (still[0].start, still[1].start, still[1].stop) == (40 - pad, 90 - pad, 110 + pad)
    assert moving[1].start <= 90 - pad - 20 and moving[1].stop >= 110 + pad + 20
    assert flow_tracker._roi(np.zeros((100, 200), bool), fast) == (slice(0, 100), slice(0, 200))  # lost: everywhere


def test_tracking_is_deterministic():
    """The same clip and annotation give the same masks on every call (a resumed run reuses or redoes them)."""
    frames, objects = blob_scene(n_frames=8, size=(96, 128), start=(40.0, 40.0))
    box = _box_around(objects[0])
    first = track_masks(frames, box, 0)
    cv2.grabCut(frames[0][..., ::-1].copy(), np.where(box, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8), None,
                np.zeros((1, 65)), np.zeros((1, 65)), 2, cv2.GC_INIT_WITH_MASK)  # moves OpenCV's RNG on
    np.testing.assert_array_equal(track_masks(frames, box, 0), first)


def test_trace_to_follows_each_steps_flow_both_ways_and_rejects_inconsistent_steps():
    """Tracing composes fw[i] forward and bw[i-1] backward, one step per frame (the tracker's recovery would hide a
    wrong direction or index on the oracle clips); a step whose reverse flow disagrees marks its positions."""
    n, h, w = 4, 20, 40
    fw = np.zeros((n - 1, h, w, 2), np.float32)
    for i in range(n - 1):
        fw[i, ..., 0], fw[i, ..., 1] = i + 1.0, 0.5  # step i -> i+1 moves by (i+1, 0.5): every step differs
    bw = -fw
    x0, y0 = np.float32([[5.0, 8.0]]), np.float32([[4.0, 6.0]])
    x, y, ok = flow_tracker.trace_to(fw, bw, 0, 3, x0, y0)
    np.testing.assert_allclose(x, x0 + 6)
    np.testing.assert_allclose(y, y0 + 1.5)
    assert ok.all()
    x, y, ok = flow_tracker.trace_to(fw, bw, 3, 0, x0 + 20, y0 + 5)  # back from frame 3: bw[2], bw[1], bw[0]
    np.testing.assert_allclose(x, x0 + 14)
    np.testing.assert_allclose(y, y0 + 3.5)
    assert ok.all()
    x, y, ok = flow_tracker.trace_to(fw, bw, 2, 1, x0 + 20, y0)  # one step back: bw[1] alone
    np.testing.assert_allclose(x, x0 + 18)
    bad = bw.copy()
    bad[1, :, 20:] = 0.0  # frame 2's reverse flow disagrees right of x=20 (an occlusion)
    _, _, ok = flow_tracker.trace_to(fw, bad, 0, 3, np.float32([[2.0, 30.0]]), np.float32([[5.0, 5.0]]))
    assert ok.tolist() == [[True, False]]  # x 2 reaches frame 2 at x 5 (consistent), x 30 at x 33 (rejected)
