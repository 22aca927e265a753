"""Which pixels of other frames `propagate` may read: outside the user's mask grown by mask.source_margin
(`PropagateOptions.source_erode`), while the output still replaces all of mask.dilate."""
import numpy as np
import pytest

from fffvdi.config import load_config
from fffvdi.errors import ConfigError
from fffvdi.inpaint.checks import check_inference_config
from fffvdi.inpaint.config import InferenceConfig
from fffvdi.inpaint.methods import propagate_options
from fffvdi.io.masks import dilate_mask
from fffvdi.propagate.clip import propagate_inpaint
from fffvdi.propagate.holes import source_hole
from fffvdi.propagate.options import PropagateOptions

HALO = np.array([255, 0, 255], np.uint8)  # an object's soft edge, just outside the user's mask


def test_source_hole_undoes_part_of_the_dilation():
    mask = np.zeros((40, 60), bool)
    mask[10:25, 20:35] = True
    mask[0:6, 50:60] = True  # touching the image edge: it must stay there
    grown = dilate_mask(mask.astype(np.uint8), 4) > 0
    for erode in (0, 1, 2, 4):
        assert np.array_equal(source_hole(grown, erode), dilate_mask(mask.astype(np.uint8), 4 - erode) > 0)
    assert source_hole(grown, 2)[0, 59] and source_hole(grown, 2)[0:4, 55].all()


def _pan_with_a_haloed_occluder(f: int = 10, h: int = 72, w: int = 112):
    """A texture panning 2 px/frame, an occluder box moving 3 px/frame whose 2-px magenta halo lies outside
    its mask (inside mask.dilate=4). Returns (frames the user has, truth, user masks)."""
    from fffvdi.data.synthetic import smooth_texture

    tex = smooth_texture(h, w + 2 * f + 8, np.random.default_rng(5))
    truth = np.stack([tex[:, 2 * t : 2 * t + w] for t in range(f)])
    frames, masks = truth.copy(), np.zeros((f, h, w), bool)
    for t in range(f):
        x = 30 + 3 * t
        masks[t, 24:48, x : x + 16] = True
        halo = (dilate_mask(masks[t].astype(np.uint8), 2) > 0) & ~masks[t]
        frames[t][halo] = HALO
        frames[t][masks[t]] = (20, 200, 20)
    return frames, truth, masks


def test_reading_the_outer_ring_never_reads_the_halo_and_helps():
    frames, truth, masks = _pan_with_a_haloed_occluder()
    grown = np.stack([dilate_mask(m.astype(np.uint8), 4) for m in masks]) > 0
    err = lambda x: float(((x[masks].astype(float) - truth[masks]) ** 2).mean())  # noqa: E731
    magenta = lambda x: int((np.abs(x[grown].astype(int) - HALO).sum(-1) < 60).sum())  # noqa: E731
    outs = {k: propagate_inpaint(frames, grown, options=PropagateOptions(source_erode=k))[0] for k in (0, 2, 4)}
    assert magenta(outs[0]) == 0 and magenta(outs[2]) == 0
    assert magenta(outs[4]) > 20  # the whole ring read: the halo is copied in (the test can fail)
    assert err(outs[2]) < err(outs[0])  # nearer landings in the clean outer ring


@pytest.mark.parametrize("dilate,margin,erode", [(4, 2, 2), (4, 4, 0), (4, 9, 0), (1, 2, 0), (0, 2, 0), (6, 0, 6)])
def test_inference_reads_the_ring_outside_source_margin(dilate, margin, erode):
    cfg = load_config(InferenceConfig, None, [f"mask.dilate={dilate}", f"mask.source_margin={margin}"])
    assert propagate_options(cfg).source_erode == erode


def test_source_margin_config_errors_and_default():
    assert propagate_options(load_config(InferenceConfig, None, [])).source_erode == 2  # dilate 4, margin 2
    with pytest.raises(ConfigError, match="mask.source_margin"):
        check_inference_config(load_config(InferenceConfig, None, ["mask.source_margin=-1"]))
    with pytest.raises(ConfigError, match="source_erode"):
        PropagateOptions(source_erode=-1)


def test_evaluation_never_reads_the_protocols_hidden_ring(tmp_path):
    # The evaluation hides the whole dilated test mask from the method (harness.run_method zeroes it).
    from fffvdi.evaluation.settings import EvalSettings, method_config

    s = EvalSettings(dataset_root=str(tmp_path), output=str(tmp_path / "out"), method="propagate")
    assert propagate_options(method_config(s)).source_erode == 0
    s = EvalSettings(dataset_root=str(tmp_path), output=str(tmp_path / "out"), method="propagate",
                     overrides=["mask.dilate=6", "mask.source_margin=1"])
    assert propagate_options(method_config(s)).source_erode == 0


def test_the_method_input_shows_the_outer_ring_only():
    # propagate_inpaint hands the method the frames with the source hole, not the whole grown mask, blanked.
    seen = {}
    import fffvdi.propagate.clip as clip

    original = clip.propagate_video

    def spy(read_frames, read_masks, total, *args, **kwargs):
        seen["frames"], seen["masks"] = read_frames(0, total), read_masks(0, total)
        return original(read_frames, read_masks, total, *args, **kwargs)

    frames, _, masks = _pan_with_a_haloed_occluder(f=3)
    grown = np.stack([dilate_mask(m.astype(np.uint8), 4) for m in masks]) > 0
    try:
        clip.propagate_video = spy
        propagate_inpaint(frames, grown, options=PropagateOptions(source_erode=2))
    finally:
        clip.propagate_video = original
    inner = np.stack([dilate_mask(m.astype(np.uint8), 2) for m in masks]) > 0
    assert np.array_equal(seen["masks"], grown)  # the output hole is the whole grown mask
    assert (seen["frames"][inner] == 0).all()
    assert np.array_equal(seen["frames"][grown & ~inner], frames[grown & ~inner])
