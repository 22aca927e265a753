"""Weight-free baselines: per-frame Telea and flow propagation + Telea, on synthetic known motion."""
import numpy as np
import pytest
import torch

from fffvdi.errors import InputError
from fffvdi.propagate.clip import propagate_inpaint
from fffvdi.propagate.telea import telea_inpaint
from synthetic_video import translating_frames


def psnr_u8(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_propagate_inpaint_recovers_revealed_content_and_keeps_the_rest():
    frames = translating_frames((3, -2))
    masks = np.zeros(frames.shape[:3], bool)
    masks[:, 22:42, 38:58] = True
    corrupted = frames.copy()
    corrupted[masks] = 255  # an object we remove: its colour must not reach the output
    out, unfilled = propagate_inpaint(corrupted, masks)
    assert out.shape == frames.shape and out.dtype == np.uint8 and unfilled.shape == masks.shape
    assert np.array_equal(out[~masks], frames[~masks])
    revealed = masks & ~unfilled
    assert revealed.sum() > 0.5 * masks.sum()
    p = psnr_u8(out[revealed], frames[revealed])
    assert p > 35, p  # measured 47.3 dB over all frames' revealed hole pixels (95 % of the hole)


def test_propagate_inpaint_reports_never_revealed_and_fills_them_spatially():
    shift = (3, -2)
    frames = translating_frames(shift, n_frames=5)
    masks = np.zeros(frames.shape[:3], bool)
    for t in range(5):  # the hole moves with the content: nothing ever shows what is under it
        masks[t, 30 + shift[1] * t : 40 + shift[1] * t, 20 + shift[0] * t : 30 + shift[0] * t] = True
    corrupted = frames.copy()
    corrupted[masks] = 0
    out, unfilled = propagate_inpaint(torch.from_numpy(corrupted), torch.from_numpy(masks))
    assert unfilled.sum() > 0.8 * masks.sum() and not unfilled[~masks].any()  # measured: all of it
    assert np.array_equal(out[~masks], frames[~masks])
    assert out[unfilled].mean() > 40  # Telea replaced the black hole by surrounding texture (mean ~128)


def test_telea_inpaint_changes_only_the_hole():
    frames = translating_frames((1, 1), n_frames=3)
    masks = np.zeros(frames.shape[:3], np.uint8)
    masks[:, 28:36, 40:48] = 1
    corrupted = frames.copy()
    corrupted[masks > 0] = 0
    out = telea_inpaint(corrupted, masks)
    assert np.array_equal(out[masks == 0], frames[masks == 0])
    p = psnr_u8(out[masks > 0], frames[masks > 0])
    assert p > 17, p  # a small hole in a smooth texture; measured 20.0 dB (the black hole: ~6 dB)


def test_baselines_reject_bad_input():
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    with pytest.raises(InputError):
        telea_inpaint(frames, np.zeros((2, 16, 16)))
    with pytest.raises(InputError):
        propagate_inpaint(frames.astype(np.float32), np.zeros((3, 16, 16)))
    out, unfilled = propagate_inpaint(frames[:1], np.ones((1, 16, 16)))  # one frame: Telea only
    assert out.shape == (1, 16, 16, 3) and unfilled.all()


@pytest.mark.parametrize("scene", ["pan_object_box", "zoom_box"])
def test_propagate_beats_telea_by_6db_on_real_motion_like_scenes(scene):
    """Camera pan/zoom + a moving object that stays + a box of 1/8 width crossing the frame (the mask)."""
    from fffvdi.data.motion_scenes import SCENES, masked_psnr, render_scene

    spec = next(s for s in SCENES if s.name == scene)
    gt, masked, masks = render_scene(spec, 24, (120, 216), seed=3)
    out, _ = propagate_inpaint(masked, masks)
    assert np.array_equal(out[~masks], gt[~masks])
    gain = masked_psnr(out, gt, masks) - masked_psnr(telea_inpaint(masked, masks), gt, masks)
    assert gain > 6, gain  # measured +8.9 dB (pan + object) and +14.8 dB (zoom)


def test_propagate_streams_in_order_with_a_bounded_buffer():
    from fffvdi.flow.completion import build_flow_completer
    from fffvdi.flow.estimators import DISFlow
    from fffvdi.propagate.options import PropagateOptions
    from fffvdi.propagate.video import propagate_video

    n = 40
    frames = translating_frames((4.3, 1.4), n_frames=n, size=(48, 64))
    masks = np.zeros(frames.shape[:3], bool)
    masks[:, 16:32, 20:40] = True  # static hole; 4 frames each way move the content 17 px: all revealed
    order, reads = [], []
    visible = np.where(masks[..., None], 0, frames).astype(np.uint8)

    def read(a, b):
        reads.append(a)
        return visible[a:b]

    out = np.zeros_like(frames)

    def sink(t, result):
        order.append(t)
        out[t] = result[0]

    completer = build_flow_completer("smooth")
    guides = []
    plain_pair = completer.complete_pair

    def spy_pair(fw, bw, m, frames=None, ignore=None):
        guides.append(frames)
        return plain_pair(fw, bw, m, frames, ignore)

    completer.complete_pair = spy_pair
    stats = propagate_video(read, lambda a, b: masks[a:b], n, sink, DISFlow(), completer,
                            PropagateOptions(radius=4), progress=False)
    # each pair completed once, guided by its two pre-filled frames (no hole: Telea filled it)
    assert len(guides) == n - 1 and all(g.shape == (1, 2, 3, 48, 64) for g in guides)
    assert not torch.isclose(guides[0][0, 0].permute(1, 2, 0)[masks[0]], torch.tensor(0.0)).all()
    assert order == list(range(n)) and reads == list(range(n))  # each frame read once, finished in order
    assert stats.max_records <= 2 * 4 + 3  # the ring buffer follows the radius, not the length
    assert stats.propagated > 0.95 * stats.hole_pixels
    assert np.array_equal(out[~masks], frames[~masks])
    with pytest.raises(Exception, match="propagate.combine"):
        PropagateOptions(combine="median")


class _ExactShift:
    """A flow 'estimator' that returns a known constant translation (for oracles of the streamed method)."""

    def __init__(self, shift):
        self.shift = shift

    def __call__(self, frames):
        b, f, _, h, w = frames.shape
        fw = torch.tensor(self.shift, dtype=torch.float32).view(1, 1, 2, 1, 1).expand(b, f - 1, 2, h, w).clone()
        return fw, -fw


def test_poisson_blend_removes_an_illumination_seam():
    """Frames brighten by 4 levels per frame: copied pixels are off by a constant, which the membrane removes."""
    from fffvdi.flow.completion import build_flow_completer
    from fffvdi.propagate.options import PropagateOptions
    from fffvdi.propagate.video import propagate_video

    n, shift = 16, (3.3, 1.2)
    frames = translating_frames(shift, n_frames=n, size=(48, 64)).astype(np.int32)
    frames = np.clip(frames // 2 + 40 + 4 * np.arange(n)[:, None, None, None], 0, 255).astype(np.uint8)
    masks = np.zeros(frames.shape[:3], bool)
    masks[:, 16:32, 20:40] = True
    scores = {}
    for blend in ("none", "poisson"):
        out = np.zeros_like(frames)
        propagate_video(lambda a, b: np.where(masks[a:b, ..., None], 0, frames[a:b]), lambda a, b: masks[a:b], n,
                        lambda t, r: out.__setitem__(t, r[0]), _ExactShift(shift), build_flow_completer("smooth"),
                        PropagateOptions(blend=blend), progress=False)
        assert np.array_equal(out[~masks], frames[~masks])
        scores[blend] = psnr_u8(out[masks], frames[masks])
    assert scores["poisson"] > max(scores["none"] + 6, 40), scores  # measured 28.4 -> 40.9 dB


def test_make_motion_scenes_writes_the_evaluation_layout(tmp_path):
    import importlib.util
    from pathlib import Path

    import cv2

    path = Path(__file__).resolve().parents[1] / "scripts" / "make_motion_scenes.py"
    spec = importlib.util.spec_from_file_location("make_motion_scenes", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path), "--frames", "3", "--size", "48x96"]) == 0
    scenes = sorted(p.name for p in (tmp_path / "JPEGImages").iterdir())
    assert len(scenes) == 4 and scenes == sorted(p.name for p in (tmp_path / "test_masks").iterdir())
    mask = cv2.imread(str(tmp_path / "test_masks" / scenes[0] / "00001.png"), cv2.IMREAD_GRAYSCALE)
    frame = cv2.imread(str(tmp_path / "JPEGImages" / scenes[0] / "00001.png"))
    assert mask.shape == frame.shape[:2] == (48, 96) and 0 < (mask > 0).mean() < 0.2
    assert mod.main([str(tmp_path), "--frames", "3", "--size", "48x96"]) == 2  # never overwrites unasked
