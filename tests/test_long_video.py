"""Window planning and the long-video driver, with an exact oracle window function."""
import numpy as np
import pytest
import torch

from fffvdi.inpaint.windows import crossfade_weights, plan_windows, run_windows


@pytest.mark.parametrize("total,size,overlap", [(60, 14, 4), (14, 14, 4), (5, 14, 4), (31, 25, 4), (100, 25, 0), (26, 25, 4)])
def test_windows_cover_video_with_overlap(total, size, overlap):
    wins = plan_windows(total, size, overlap)
    assert wins[0][0] == 0 and wins[-1][1] == total
    for (s0, e0), (s1, e1) in zip(wins, wins[1:]):
        assert e0 - s1 >= overlap  # consecutive windows share at least `overlap` frames
        assert s1 > s0  # progress
    assert all(e - s == min(size, total) for s, e in wins)  # every window is full length


def test_bad_window_settings():
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(10, 4, 4)


def test_crossfade_weights_rise():
    w = crossfade_weights(4)
    assert np.all(np.diff(w) > 0) and 0 < w[0] and w[-1] < 1


def _video(total, h=6, w=5):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (total, h, w, 3), dtype=np.uint8)
    masks = np.zeros((total, h, w), np.uint8)
    masks[:, 2:4, 1:3] = 1
    return frames, masks


def test_every_frame_written_once_in_order_and_anchored():
    frames, masks = _video(60)
    calls = []

    def process(f, m, g):
        calls.append((f.copy(), m.copy()))
        out = f.copy()
        out[m.astype(bool)] = 7  # "inpainting": a constant inside the hole
        return out

    written = []
    run_windows(process, lambda a, b: frames[a:b], lambda a, b: masks[a:b], 60,
                lambda first, fr: written.append((first, fr)), size=14, overlap=4, progress=False)
    firsts = [f for f, _ in written]
    out = np.concatenate([fr for _, fr in written])
    assert out.shape == frames.shape
    assert firsts == sorted(firsts) and firsts[0] == 0
    assert [f for f, _ in written] == list(np.cumsum([0] + [len(fr) for _, fr in written])[:-1])  # contiguous
    hole = masks.astype(bool)
    assert np.array_equal(out[~hole], frames[~hole])  # outside the mask: the input, bit for bit
    assert np.all(out[hole] == 7)
    # windows after the first start from the previous output, with an empty mask
    for f, m in calls[1:]:
        assert not m[0].any()
        assert np.all(f[0][hole[0]] == 7)


def test_overlap_is_crossfaded():
    frames, masks = _video(20)
    value = iter([10, 210])

    def process(f, m, g):
        v = next(value)
        out = f.copy()
        out[m.astype(bool)] = v
        return out

    written = []
    run_windows(process, lambda a, b: frames[a:b], lambda a, b: masks[a:b], 20,
                lambda first, fr: written.append(fr), size=14, overlap=4, progress=False)
    out = np.concatenate(written)
    inside = out[:, 3, 1, 0].astype(int)
    assert inside[0] == 10 and inside[-1] == 210
    # windows [0,14) and [6,20): frame 6 is the anchor (first window's), 7..13 blend towards 210
    assert inside[6] == 10
    assert np.all(np.diff(inside[6:14]) > 0)



def test_only_masked_pixels_are_crossfaded():
    """Outside the mask an overlap frame is the later window's output as is (no blend, no float round trip)."""
    frames, masks = _video(20)
    tag = iter([1, 2])

    def process(f, m, g):
        out = f.copy()
        out[~m.astype(bool)] = next(tag)  # each window marks the pixels it leaves alone
        out[m.astype(bool)] = 100
        return out

    written = []
    run_windows(process, lambda a, b: frames[a:b], lambda a, b: masks[a:b], 20,
                lambda first, fr: written.append(fr), size=14, overlap=4, progress=False)
    out = np.concatenate(written)
    known = ~masks.astype(bool)
    assert np.all(out[:6][known[:6]] == 1)
    assert np.all(out[7:14][known[7:14]] == 2)  # overlap frames 7..13 (6 is the anchor): the second window's

def test_same_seed_same_draws():
    frames, masks = _video(30)

    draws = []

    def noisy(f, m, g):
        draws.append(torch.rand(1, generator=g).item())
        return f

    for _ in range(2):
        run_windows(noisy, lambda a, b: frames[a:b], lambda a, b: masks[a:b], 30, lambda *a: None, 14, 4, seed=5, progress=False)
    half = len(draws) // 2
    assert draws[:half] == draws[half:]


def test_resume_from_a_checkpoint_gives_the_same_frames_and_draws():
    """Stop after window k, resume from the state saved then: frames and random draws equal one whole run."""
    frames, masks = _video(40)

    def noisy(f, m, g):
        out = f.copy()
        out[m.astype(bool)] = (torch.rand(1, generator=g).item() * 255)  # depends on the generator's state
        return out

    def run(stop_after=None, resume=None):
        written, states = {}, []

        def sink(first, fr):
            if stop_after is not None and len(states) == stop_after:
                raise KeyboardInterrupt  # interrupted while writing window `stop_after`
            for i, f in enumerate(fr):
                written[first + i] = f

        try:
            run_windows(noisy, lambda a, b: frames[a:b], lambda a, b: masks[a:b], 40, sink, 10, 3, seed=3,
                        progress=False, resume=resume, checkpoint=states.append)
        except KeyboardInterrupt:
            pass
        return written, states

    whole, states = run()
    assert len(states) == len(plan_windows(40, 10, 3)) - 1
    first_part, saved = run(stop_after=2)
    assert sorted(first_part) == list(range(saved[-1].done))
    rest, _ = run(resume=saved[-1])
    assert sorted(rest) == list(range(saved[-1].done, 40))
    joined = {**first_part, **rest}
    assert all(np.array_equal(joined[i], whole[i]) for i in range(40))
    with pytest.raises(ValueError, match="does not fit"):
        run_windows(noisy, lambda a, b: frames[a:b], lambda a, b: masks[a:b], 40, lambda *a: None, 12, 3,
                    progress=False, resume=saved[-1])


def test_no_overlap_runs_independent_windows():
    frames, masks = _video(30)
    written = []
    run_windows(lambda f, m, g: f, lambda a, b: frames[a:b], lambda a, b: masks[a:b], 30,
                lambda first, fr: written.append((first, len(fr))), 10, 0, progress=False)
    assert written == [(0, 10), (10, 10), (20, 10)]
