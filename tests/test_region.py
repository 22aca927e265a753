"""Mask-region crops (window.region): the crop plan's invariants, paste-back, and 1080p through the windowed pipeline."""
import logging
import warnings

import numpy as np
import pytest
import torch

from fffvdi.inpaint.region import (
    MIN_MARGIN, Crop, canvas_scale, choose_region, cropped, cropped_io, mask_box, paste, plan_crop, video_crop,
)

HD = (1080, 1920)
CANVAS = (576, 1024)


def box_masks(size, boxes):
    """uint8 `[T, H, W]` with one (y0, x0, y1, x1) rectangle per frame."""
    masks = np.zeros((len(boxes), *size), np.uint8)
    for t, (y0, x0, y1, x1) in enumerate(boxes):
        masks[t, y0:y1, x0:x1] = 1
    return masks


def holds(crop: Crop, masks) -> bool:
    """True when every masked pixel of every frame lies inside the crop."""
    rows, cols = crop.slices()
    return int(masks[:, rows, cols].astype(bool).sum()) == int(masks.astype(bool).sum())


def inside_frame(crop: Crop, size) -> bool:
    return crop.top >= 0 and crop.left >= 0 and crop.top + crop.height <= size[0] and crop.left + crop.width <= size[1]


def test_moving_mask_crop_holds_every_frame_with_margin_at_canvas_aspect():
    boxes = [(500, 800 + 20 * t, 600, 900 + 20 * t) for t in range(8)]  # 100x100 moving 20 px/frame
    masks = box_masks(HD, boxes)
    crop = plan_crop(masks, CANVAS, context=0.5)
    assert holds(crop, masks) and inside_frame(crop, HD)
    assert abs(crop.width / crop.height - CANVAS[1] / CANVAS[0]) < 1 / crop.height + 1e-9  # canvas aspect
    y0, x0, y1, x1 = mask_box(masks)
    assert (y0, x0, y1, x1) == (500, 800, 600, 1040)
    # margins: at least context x box side (50 px up/down, 120 px left/right), on both sides, centred
    assert crop.top <= y0 - 50 and crop.top + crop.height >= y1 + 50
    assert crop.left <= x0 - 120 and crop.left + crop.width >= x1 + 120
    assert (crop.height, crop.width) == (270, 480)  # the width needs 240 + 2 x 120; the height follows at 16:9
    assert canvas_scale((crop.height, crop.width), CANVAS) > canvas_scale(HD, CANVAS)


def test_margin_never_below_the_flow_minimum():
    masks = box_masks(HD, [(540, 960, 544, 964)])  # a 4x4 speck: context x 4 px would be 2 px
    crop = plan_crop(masks, CANVAS, context=0.5)
    assert crop.top <= 540 - MIN_MARGIN and crop.top + crop.height >= 544 + MIN_MARGIN
    assert crop.left <= 960 - MIN_MARGIN and crop.left + crop.width >= 964 + MIN_MARGIN


def test_crop_near_the_border_is_shifted_into_the_frame_not_cut():
    masks = box_masks(HD, [(980, 1800, 1060, 1900)])  # 20 px from the bottom and right edges
    crop = plan_crop(masks, CANVAS, context=0.5)
    assert inside_frame(crop, HD) and holds(crop, masks)
    assert crop.top + crop.height == HD[0] and crop.left + crop.width == HD[1]  # shifted, not shrunk
    assert abs(crop.width / crop.height - CANVAS[1] / CANVAS[0]) < 1 / crop.height + 1e-9


def test_mask_touching_the_border():
    masks = box_masks(HD, [(0, 0, 120, 60), (0, 0, 130, 70)])  # top-left corner, touching two edges
    crop = plan_crop(masks, CANVAS, context=0.5)
    assert (crop.top, crop.left) == (0, 0) and holds(crop, masks) and inside_frame(crop, HD)
    masks = box_masks(HD, [(300, 0, 400, HD[1])])  # a band across the whole width
    crop = plan_crop(masks, CANVAS, context=0.5)
    assert crop == Crop(0, 0, *HD)  # only the whole frame holds it at 16:9


def test_growing_mask_is_held_in_every_frame():
    boxes = [(500 - 30 * t, 900 - 40 * t, 560 + 30 * t, 980 + 40 * t) for t in range(6)]  # grows 60/80 px per frame
    masks = box_masks(HD, boxes)
    crop = plan_crop(masks, CANVAS, context=0.5)
    assert holds(crop, masks) and inside_frame(crop, HD)
    first_only = plan_crop(masks[:1], CANVAS, context=0.5)
    assert crop.height > first_only.height and not holds(first_only, masks)  # the union, not the first frame


def test_frame_too_narrow_for_the_canvas_aspect_shrinks_but_keeps_the_mask():
    size = (1000, 300)  # portrait frame, landscape canvas
    masks = box_masks(size, [(100, 50, 700, 250)])
    crop = plan_crop(masks, CANVAS, context=0.5)
    assert holds(crop, masks) and inside_frame(crop, size)
    assert crop.width == 300 and crop.height >= 600 + 2 * MIN_MARGIN  # the margins win over the aspect


@pytest.mark.parametrize("seed", range(4))
def test_random_masks_keep_every_invariant(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        size = (int(rng.integers(64, 1200)), int(rng.integers(64, 2000)))
        canvas = (64 * int(rng.integers(1, 10)), 64 * int(rng.integers(1, 17)))
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            y0, x0 = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
            boxes.append((y0, x0, int(rng.integers(y0 + 1, size[0] + 1)), int(rng.integers(x0 + 1, size[1] + 1))))
        masks = box_masks(size, boxes)
        context = float(rng.uniform(0, 1.5))
        crop = plan_crop(masks, canvas, context)
        assert holds(crop, masks) and inside_frame(crop, size)
        assert canvas_scale((crop.height, crop.width), canvas) >= canvas_scale(size, canvas)
        if crop.height < size[0] and crop.width < size[1]:  # room in both directions: exactly the canvas aspect
            assert abs(crop.width / crop.height / (canvas[1] / canvas[0]) - 1) <= 1 / min(crop.height, crop.width)
        auto = choose_region("auto", masks, canvas, context)
        if auto is not None:
            assert holds(auto, masks) and inside_frame(auto, size)
            assert min(canvas_scale((auto.height, auto.width), canvas), 1) > min(canvas_scale(size, canvas), 1)


def test_auto_crops_only_when_the_canvas_gains_detail():
    small = box_masks(HD, [(500, 900, 600, 1000)])
    auto = choose_region("auto", small, CANVAS)
    # grown to the canvas at native scale (more context, same detail as a tighter crop would give)
    assert (auto.height, auto.width) == CANVAS and holds(auto, small)
    assert canvas_scale((auto.height, auto.width), CANVAS) == 1.0 > canvas_scale(HD, CANVAS)
    assert choose_region("crop", small, CANVAS).height == 200  # crop: the tight plan, upscaled to the canvas
    assert choose_region("full", small, CANVAS) is None
    big = box_masks(HD, [(100, 100, 1000, 1800)])  # most of the frame: the crop is the frame, no gain
    assert choose_region("auto", big, CANVAS) is None
    sd = box_masks((240, 432), [(100, 200, 130, 240)])  # fits the canvas already: upscaling adds no detail
    assert choose_region("auto", sd, CANVAS) is None and choose_region("crop", sd, CANVAS) is not None
    assert choose_region("auto", np.zeros((3, *HD), np.uint8), CANVAS) is None
    from fffvdi.errors import ConfigError

    with pytest.raises(ConfigError, match="window.region"):
        choose_region("tight", small, CANVAS)


def test_paste_changes_only_masked_pixels_inside_the_crop():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    masks = box_masks((40, 60), [(10, 20, 20, 30)] * 3)
    crop = Crop(5, 10, 30, 40)
    inpainted = np.full((3, 30, 40, 3), 7, np.uint8)  # also differs outside the mask: must not leak
    out = paste(frames, inpainted, masks, crop)
    hole = masks.astype(bool)
    assert np.array_equal(out[~hole], frames[~hole]) and np.all(out[hole] == 7)


def test_cropped_window_runs_on_the_crop_and_logs_it(caplog):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, *HD, 3), dtype=np.uint8)
    masks = box_masks(HD, [(500, 900 + 10 * t, 560, 980 + 10 * t) for t in range(4)])
    seen = []

    def process(f, m, g):
        seen.append((f.copy(), m.copy()))
        return np.full_like(f, 3)  # changes the whole crop: only its masked pixels may reach the frame

    with caplog.at_level(logging.DEBUG, logger="fffvdi.inpaint.region"):
        out = cropped(process, "crop", CANVAS, 0.5)(frames, masks, torch.Generator())
    crop = plan_crop(masks, CANVAS, 0.5)
    rows, cols = crop.slices()
    (f, m), = seen
    assert f.shape == (4, crop.height, crop.width, 3) and np.array_equal(f, frames[:, rows, cols])
    assert np.array_equal(m, masks[:, rows, cols])
    hole = masks.astype(bool)
    assert np.array_equal(out[~hole], frames[~hole]) and np.all(out[hole] == 3)
    assert any(f"crop {crop.width}x{crop.height} at ({crop.left}, {crop.top})" in r.getMessage() for r in caplog.records)
    assert cropped(process, "full", CANVAS) is process


def test_video_crop_and_cropped_io_paste_back():
    frames = np.random.default_rng(2).integers(0, 256, (5, 200, 300, 3), dtype=np.uint8)
    masks = box_masks((200, 300), [(80, 100 + 5 * t, 100, 130 + 5 * t) for t in range(5)])
    crop = video_crop(lambda a, b: masks[a:b], 5, 0.5, chunk=2)
    assert crop == plan_crop(masks, None, 0.5) and holds(crop, masks)
    written = {}
    rf, rm, sink = cropped_io(lambda a, b: frames[a:b], lambda a, b: masks[a:b], lambda i, fr: written.update({i: fr}), crop)
    assert rf(1, 3).shape == (2, crop.height, crop.width, 3) and np.array_equal(rm(0, 5), masks[:, crop.slices()[0], crop.slices()[1]])
    sink(2, np.zeros((1, crop.height, crop.width, 3), np.uint8))
    hole = masks[2].astype(bool)
    assert np.array_equal(written[2][0][~hole], frames[2][~hole]) and np.all(written[2][0][hole] == 0)
    assert video_crop(lambda a, b: np.zeros((b - a, 20, 20), np.uint8), 4, 0.5) is None


def hd_clip(n=8):
    """1920x1080 frames of a smooth texture panning 6 px/frame; a 60x100 hole moving 12 px/frame (0.3 % of the area)."""
    import cv2

    rng = np.random.default_rng(3)
    texture = cv2.resize(rng.uniform(0, 255, (HD[0] // 40, HD[1] // 40 + 4, 3)).astype(np.float32), (HD[1] + 160, HD[0]))
    frames = np.stack([texture[:, 6 * t : 6 * t + HD[1]] for t in range(n)]).astype(np.uint8)
    masks = box_masks(HD, [(600, 1300 + 12 * t, 660, 1400 + 12 * t) for t in range(n)])
    frames[masks.astype(bool)] = (250, 30, 200)  # the object to remove: must not survive inside the hole
    return frames, masks


def run_hd(tiny_svd_dir, region, frames, masks, monkeypatch):
    """The windowed tiny fffvdi method over the clip -> (output, [(frames, masks) each pipeline call received])."""
    from fffvdi.config import load_config
    from fffvdi.inpaint.config import InferenceConfig
    from fffvdi.inpaint.methods import build_method
    from fffvdi.inpaint.pipeline import FFFVDIPipeline

    cfg = load_config(InferenceConfig, None, [
        "method=fffvdi", f"model.pretrained={tiny_svd_dir}", "model.dtype=float32", "model.device=cpu", "sampling.num_steps=2",
        "window.height=64", "window.width=128", "window.num_frames=4", "window.overlap=1", "window.decode_chunk_size=4",
        f"window.region={region}",
    ])
    seen, real = [], FFFVDIPipeline.__call__
    monkeypatch.setattr(FFFVDIPipeline, "__call__", lambda self, f, m, *a, **k: seen.append((f.copy(), m.copy())) or real(self, f, m, *a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no fine-tuned checkpoint: the tiny base UNet is all these tests need
        run = build_method(cfg)
    out = np.zeros_like(frames)

    def sink(first, fr):
        out[first : first + len(fr)] = fr

    run(lambda a, b: frames[a:b], lambda a, b: masks[a:b], len(frames), sink, progress=False)
    return out, seen


def test_hd_video_is_inpainted_on_window_crops_and_pasted_back(tiny_svd_dir, monkeypatch):
    from fffvdi.inpaint.windows import plan_windows

    frames, masks = hd_clip()
    out, seen = run_hd(tiny_svd_dir, "crop", frames, masks, monkeypatch)
    hole = masks.astype(bool)
    assert out.shape == frames.shape == (8, *HD, 3)
    assert np.array_equal(out[~hole], frames[~hole])  # outside the mask: the input, bit for bit
    assert np.abs(out[hole].astype(int) - frames[hole].astype(int)).mean() > 20  # the magenta object is gone
    windows = plan_windows(8, 4, 1)
    assert len(seen) == len(windows) == 3
    for k, ((start, stop), (f, m)) in enumerate(zip(windows, seen)):
        window_masks = masks[start:stop].copy()
        if k:
            window_masks[0] = 0  # the anchor frame: the previous window's output, fully known
        crop = plan_crop(window_masks, (64, 128), 0.5)
        rows, cols = crop.slices()
        assert f.shape == (stop - start, crop.height, crop.width, 3) and crop.height < 200  # the crop, not the frame
        assert holds(crop, window_masks) and np.array_equal(m, window_masks[:, rows, cols])
        assert canvas_scale(f.shape[1:3], (64, 128)) > 5 * canvas_scale(HD, (64, 128))  # the hole, seen larger
        assert np.array_equal(f[1:], frames[start + 1 : stop, rows, cols])  # the input's pixels, cropped
        if k:
            assert np.array_equal(f[0], out[start, rows, cols])  # anchored on the pasted-back output


def test_region_full_hands_the_pipeline_whole_frames(tiny_svd_dir, monkeypatch):
    frames, masks = hd_clip(4)
    out, seen = run_hd(tiny_svd_dir, "full", frames, masks, monkeypatch)
    (f, m), = seen
    assert np.array_equal(f, frames) and np.array_equal(m, masks)
    hole = masks.astype(bool)
    assert np.array_equal(out[~hole], frames[~hole])


def test_propagate_crop_region_runs_on_the_union_crop_and_recovers_the_pan(monkeypatch):
    """A logo over a panning scene: the crop holds every revealing neighbour, so the hidden content comes back."""
    import fffvdi.inpaint.methods as methods_mod
    from fffvdi.config import load_config
    from fffvdi.data.motion_scenes import SceneSpec, masked_psnr, render_scene
    from fffvdi.inpaint.config import InferenceConfig

    gt, inp, masks = render_scene(SceneSpec("pan_logo", pan=(4.0, 0.5), box_speed=0.0), n_frames=12, size=(120, 256))
    masks = masks.astype(np.uint8)
    sizes, real = [], methods_mod.propagate_video
    monkeypatch.setattr(methods_mod, "propagate_video", lambda rf, *a, **k: sizes.append(rf(0, 1).shape[1:3]) or real(rf, *a, **k))
    results = {}
    for region in ("auto", "crop"):
        out = np.zeros_like(inp)
        # The runner gets masks as final as inference's MaskSource makes them (grown by mask.dilate): these are not.
        cfg = load_config(InferenceConfig, None, ["method=propagate", f"window.region={region}", "mask.dilate=0"])
        run = methods_mod.build_method(cfg)
        run(lambda a, b: inp[a:b], lambda a, b: masks[a:b], len(inp), lambda i, fr: out.__setitem__(slice(i, i + len(fr)), fr),
            progress=False)
        hole = masks.astype(bool)
        assert np.array_equal(out[~hole], inp[~hole])
        results[region] = masked_psnr(out, gt, hole)
    crop = plan_crop(masks, None, 0.5)
    assert sizes == [(120, 256), (crop.height, crop.width)] and crop.width < 128  # auto: full frame; crop: the union
    # measured 19.93 dB either way; Telea alone: 14.5 dB, the masked input 8.3 dB
    assert results["crop"] > 18.5 and abs(results["crop"] - results["auto"]) < 0.5
