"""Oracle tests for fffvdi.metrics: PSNR/SSIM, Frechet distance, I3D, E_warp, LPIPS plumbing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from fffvdi.errors import InputError, ModelLoadError
from fffvdi.metrics import (
    I3D_FEATURE_DIM,
    InceptionI3D,
    feature_stats,
    frame_metrics,
    frechet_distance,
    i3d_features,
    load_i3d,
    load_lpips,
    lpips_distances,
    masked_psnr,
    mean_psnr,
    motion_boundary,
    psnr,
    ssim,
    vfid,
    warping_error,
)

RNG = np.random.default_rng(0)


def _frame(h: int = 72, w: int = 80, lo: int = 0, hi: int = 256) -> np.ndarray:
    return RNG.integers(lo, hi, size=(h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- PSNR / SSIM


def test_psnr_of_constant_offset_matches_hand_formula():
    gt = _frame(hi=250)
    assert psnr(gt, gt + 5) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)


def test_psnr_identical_is_inf_and_mean_caps_at_100db():
    gt = _frame()
    assert psnr(gt, gt) == float("inf")
    assert mean_psnr([float("inf"), 30.0]) == pytest.approx(65.0)
    assert mean_psnr([20.0, 30.0], cap=25.0) == pytest.approx(22.5)


def test_masked_psnr_only_sees_the_mask():
    gt = _frame(hi=250)
    mask = np.zeros(gt.shape[:2], np.uint8)
    mask[10:30, 20:50] = 1
    pred = gt.copy()
    pred[mask == 0] = 0  # damage outside the mask only
    assert masked_psnr(gt, pred, mask) == float("inf")
    pred = gt.copy()
    pred[mask == 1] += 3  # +3 inside the mask only
    assert masked_psnr(gt, pred, mask[..., None]) == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-9)
    assert psnr(gt, pred) > masked_psnr(gt, pred, mask)
    assert math.isnan(masked_psnr(gt, pred, np.zeros_like(mask)))


def test_ssim_identical_is_one_and_matches_skimage_protocol_call():
    gt, other = _frame(), _frame()
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)
    expected = structural_similarity(gt, other, data_range=255, win_size=65, channel_axis=-1)
    assert ssim(gt, other) == pytest.approx(expected, abs=1e-12)
    noisy = np.clip(gt.astype(int) + RNG.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    assert 0.0 < ssim(gt, noisy) < 1.0


def test_ssim_rejects_frames_smaller_than_the_window_and_shape_mismatch():
    with pytest.raises(InputError, match="65x65"):
        ssim(_frame(40, 80), _frame(40, 80))
    with pytest.raises(InputError, match="shapes differ"):
        psnr(_frame(), _frame(72, 81))


def test_frame_metrics_rows_and_count_check():
    gt = np.stack([_frame(hi=250) for _ in range(3)])
    rows = frame_metrics(gt, gt + 5, masks=np.ones((3, 72, 80), np.uint8))
    assert len(rows) == 3 and set(rows[0]) == {"psnr", "ssim", "masked_psnr"}
    assert rows[1]["psnr"] == pytest.approx(rows[1]["masked_psnr"])
    with pytest.raises(InputError, match="frame count"):
        frame_metrics(gt, gt[:2])


# ---------------------------------------------------------------- Frechet distance


def _random_cov(d: int) -> np.ndarray:
    a = RNG.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_identical_stats_is_zero():
    mu, sigma = RNG.normal(size=8), _random_cov(8)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_frechet_equal_covariance_is_squared_mean_distance():
    mu1, mu2, sigma = RNG.normal(size=8), RNG.normal(size=8), _random_cov(8)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), abs=1e-6)


def test_frechet_diagonal_covariances_closed_form():
    mu1, mu2 = RNG.normal(size=6), RNG.normal(size=6)
    a, b = RNG.uniform(0.1, 3.0, 6), RNG.uniform(0.1, 3.0, 6)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-8)


def test_vfid_uses_sample_stats_and_survives_singular_covariance():
    real, fake = RNG.normal(size=(40, 5)), RNG.normal(loc=1.0, size=(40, 5))
    mu1, s1 = feature_stats(real)
    assert np.allclose(s1, np.cov(real, rowvar=False)) and np.allclose(mu1, real.mean(0))
    mu2, s2 = feature_stats(fake)
    assert vfid(real, fake) == pytest.approx(frechet_distance(mu1, s1, mu2, s2))
    assert abs(vfid(real, real)) < 1e-6
    few = RNG.normal(size=(4, 16))  # fewer videos than dims, like DAVIS's 50 videos vs 1024-d: rank-deficient
    assert math.isfinite(vfid(few, few + 0.5))
    with pytest.raises(InputError, match="at least 2"):
        feature_stats(real[:1])


# ---------------------------------------------------------------- I3D

EXPECTED_KEYS = [
    "Conv3d_1a_7x7.conv3d.weight",
    "Conv3d_1a_7x7.bn.weight",
    "Conv3d_1a_7x7.bn.running_var",
    "Conv3d_2c_3x3.conv3d.weight",
    "Mixed_3b.b0.conv3d.weight",
    "Mixed_3b.b1a.bn.bias",
    "Mixed_3b.b1b.conv3d.weight",
    "Mixed_3b.b2a.conv3d.weight",
    "Mixed_3b.b2b.bn.running_mean",
    "Mixed_3b.b3b.conv3d.weight",
    "Mixed_5c.b3b.bn.weight",
    "logits.conv3d.weight",
    "logits.conv3d.bias",
]


@pytest.fixture(scope="module")
def i3d() -> InceptionI3D:
    torch.manual_seed(0)
    return InceptionI3D().eval()


def test_i3d_state_dict_matches_checkpoint_layout(i3d):
    sd = i3d.state_dict()
    for key in EXPECTED_KEYS:
        assert key in sd, key
    # 57 conv+BN units x 5 tensors + logits weight/bias; BN also has num_batches_tracked (57 more).
    assert len([k for k in sd if not k.endswith("num_batches_tracked")]) == 287
    assert len(sd) == 344
    assert tuple(sd["Conv3d_1a_7x7.conv3d.weight"].shape) == (64, 3, 7, 7, 7)
    assert tuple(sd["Mixed_4b.b1b.conv3d.weight"].shape) == (208, 96, 3, 3, 3)
    assert tuple(sd["Mixed_5c.b3b.conv3d.weight"].shape) == (128, 832, 1, 1, 1)
    assert tuple(sd["logits.conv3d.weight"].shape) == (400, 1024, 1, 1, 1)
    assert not any(k.startswith(("Mixed_3b.b3a", "MaxPool")) for k in sd)  # pools carry no weights


def test_i3d_features_shape_on_tiny_clip(i3d):
    feats = i3d_features(i3d, RNG.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8))
    assert feats.shape == (I3D_FEATURE_DIM,) and np.isfinite(feats).all()


@torch.no_grad()
def test_i3d_batch_stats_mode_normalises_per_video(i3d):
    video = 10 * torch.rand(1, 3, 8, 64, 64)
    # Protocol mode (train-mode BN, batch of one video): a bias-free conv + BN cancels a global input scale.
    a, b = i3d(video), i3d(2 * video)
    assert a.abs().max() > 0.1 and torch.allclose(a, b, atol=1e-2)
    i3d.set_bn_batch_stats(False)
    try:  # Running stats at init (mean 0, var 1): the net is positively homogeneous, f(2x) = 2 f(x).
        a, b = i3d(video), i3d(2 * video)
        assert a.abs().max() > 0 and torch.allclose(b, 2 * a, rtol=1e-3, atol=1e-12)
    finally:
        i3d.set_bn_batch_stats(True)


def test_load_i3d_strict_from_pre_0_4_style_checkpoint(i3d, tmp_path):
    # The 2018 checkpoint has no bn.num_batches_tracked; strict loading must still accept it.
    legacy = {k: v.clone() for k, v in i3d.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "i3d_rgb_imagenet.pt"
    torch.save(legacy, path)
    loaded = load_i3d(path)
    clip = RNG.integers(0, 256, (6, 48, 56, 3), dtype=np.uint8)
    assert np.allclose(i3d_features(loaded, clip), i3d_features(i3d, clip), atol=1e-6)
    legacy["Mixed_9z.b0.conv3d.weight"] = torch.zeros(1)
    torch.save(legacy, path)
    with pytest.raises(ModelLoadError, match="Mixed_9z"):
        load_i3d(path)


def test_load_i3d_missing_file_names_path_and_flag(tmp_path):
    with pytest.raises(ModelLoadError, match=r"not found at .*nope\.pt.*--i3d-weights"):
        load_i3d(tmp_path / "nope.pt")


# ---------------------------------------------------------------- E_warp


def _shifted_video(f: int = 3, h: int = 24, w: int = 32, dx: int = 2, dy: int = 1) -> np.ndarray:
    base = RNG.integers(20, 236, (h, w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, (t * dy, t * dx), axis=(0, 1)) for t in range(f)])


def _constant_flows(f: int, h: int, w: int, dx: float, dy: float):
    fw = torch.zeros(1, f - 1, 2, h, w)
    fw[:, :, 0], fw[:, :, 1] = dx, dy
    return fw, -fw


def _exact_flow_fn(dx: int, dy: int):
    def flow_fn(video: torch.Tensor):
        _, f, _, h, w = video.shape
        return _constant_flows(f, h, w, dx, dy)

    return flow_fn


def test_ewarp_zero_for_exact_translation():
    video = _shifted_video()
    result = warping_error(video, _exact_flow_fn(2, 1), flow_model="exact")
    assert result.value == pytest.approx(0.0, abs=1e-10)
    assert result.flow_model == "exact"


def test_ewarp_noise_on_one_frame_matches_hand_computation():
    dx, dy = 2, 1
    video = _shifted_video(dx=dx, dy=dy)
    video[1] = np.clip(video[1].astype(int) + RNG.integers(-15, 16, video[1].shape), 0, 255).astype(np.uint8)
    v = video.astype(np.float64) / 255.0
    h, w = v.shape[1:3]
    # Non-occluded = pixels whose target p + (dx, dy) stays inside the frame; 3 channels each.
    pair = [np.mean((v[t + 1][dy:, dx:] - v[t][: h - dy, : w - dx]) ** 2) for t in range(2)]
    result = warping_error(video, _exact_flow_fn(dx, dy))
    assert result.value > 0
    assert result.value == pytest.approx(np.mean(pair), rel=1e-5)


def test_ewarp_ignores_pixels_failing_forward_backward_check():
    video = _shifted_video(f=2, dx=2, dy=1)
    video[0, 5:10, 5:12] = 0  # corrupt a patch of frame 0
    h, w = video.shape[1:3]

    def flow_fn(clip):
        fw, bw = _constant_flows(2, h, w, 2, 1)
        bw[:, :, :, 6:11, 7:14] += 10.0  # wrong backward flow where the patch lands in frame 1
        return fw, bw

    assert warping_error(video, flow_fn).value == pytest.approx(0.0, abs=1e-10)
    assert warping_error(video, _exact_flow_fn(2, 1)).value > 1e-3


def test_ewarp_estimates_flow_on_reference_and_chunks_consistently():
    video, reference = _shifted_video(f=5), _shifted_video(f=5)
    seen = []

    class Estimator:
        name = "recording"

        def __call__(self, clip):
            seen.append(clip.clone())
            return _exact_flow_fn(2, 1)(clip)

    est = Estimator()
    whole = warping_error(video, est, reference=reference)
    assert whole.flow_model == "recording"
    assert torch.allclose(seen[0][0, 0], torch.from_numpy(reference[0]).permute(2, 0, 1).float() / 255)
    chunked = warping_error(video, est, reference=reference, chunk_frames=3)
    assert [s.shape[1] for s in seen[1:]] == [3, 3]  # frames 0-2 and 2-4 share frame 2
    assert chunked.value == pytest.approx(whole.value, rel=1e-9)
    with pytest.raises(InputError, match="at least 2"):
        warping_error(video[:1], est)


def test_motion_boundary_marks_flow_discontinuity():
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0, :, 3:] = 5.0  # step in x-flow between columns 2 and 3
    mb = motion_boundary(flow)[0, 0]
    assert mb[:, 2].all() and not mb[:, :2].any() and not mb[:, 3:].any()


# ---------------------------------------------------------------- LPIPS (optional)


def test_load_lpips_without_package_or_weights_raises_model_load_error(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))  # empty hub cache: no trunk weights
    try:
        with pytest.raises(ModelLoadError, match="lpips|LPIPS"):
            load_lpips("alex")
    finally:
        torch.hub.set_dir(old)


def test_lpips_distances_scales_to_minus_one_one_and_batches():
    gt = np.zeros((5, 8, 8, 3), np.uint8)
    pred = np.full((5, 8, 8, 3), 255, np.uint8)
    pred[3] = 0
    fake = lambda a, b: (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)  # noqa: E731 - stand-in for lpips
    assert lpips_distances(fake, gt, pred, batch_size=2) == pytest.approx([2.0, 2.0, 2.0, 0.0, 2.0])
