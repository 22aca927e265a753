"""The pipeline's wiring, spied at its boundaries: what reaches the VAE, the UNet, guidance and first-frame filling."""
import numpy as np
import pytest
import torch

from fffvdi.config import load_config
from fffvdi.inpaint.config import InferenceConfig

N, H, W, SHIFT = 6, 64, 128, 3  # frames, canvas = input size (no resizing), pan in px/frame (content moves left)


@pytest.fixture(scope="module")
def components(tiny_svd_dir):
    from fffvdi.models.loading import load_svd_components

    return load_svd_components(str(tiny_svd_dir), None, torch.float32, "cpu")


def make_pipe(components, *overrides):
    from fffvdi.inpaint.pipeline import FFFVDIPipeline

    cfg = load_config(InferenceConfig, None, [
        "model.dtype=float32", "model.device=cpu", "sampling.num_steps=2", f"window.height={H}", f"window.width={W}",
        f"window.num_frames={N}", "window.decode_chunk_size=3", *overrides,
    ])
    return FFFVDIPipeline(components, cfg, torch.device("cpu"), torch.float32)


def clip():
    rng = np.random.default_rng(0)
    import cv2

    big = cv2.resize(rng.uniform(0, 255, (H // 8, (W + SHIFT * N) // 8, 3)).astype(np.float32), (W + SHIFT * N, H))
    frames = np.stack([big[:, SHIFT * t : SHIFT * t + W] for t in range(N)]).clip(0, 255).astype(np.uint8)
    masks = np.zeros((N, H, W), np.uint8)
    masks[:, 16:48, 40:88] = 1
    return frames, masks


def test_conditioning_pixels_show_only_the_noise_augmentation_inside_the_hole(components, monkeypatch):
    pipe = make_pipe(components)
    seen = []
    real = pipe.cond.encode
    monkeypatch.setattr(pipe.cond, "encode", lambda px, *a: seen.append(px.clone()) or real(px, *a))
    frames, masks = clip()
    pipe(frames, masks, torch.Generator().manual_seed(0))
    (px,) = seen  # [1, F, 3, H, W] in [-1, 1]
    hole = torch.from_numpy(masks.astype(bool))[None, :, None].expand_as(px)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float() / 127.5 - 1
    aug = pipe.cfg.sampling.noise_aug_strength
    assert px[hole].std() < 2 * aug and px[hole].abs().mean() < aug  # nothing of the hidden content
    assert (px - video)[~hole].std() < 2 * aug  # the rest is the frame plus the same small noise
    assert 0.5 * aug < px[hole].std() and 0.5 * aug < (px - video)[~hole].std()  # the augmentation is there


def test_unet_sees_latent_masks_and_flows_and_guidance_rises(components, monkeypatch):
    import fffvdi.inpaint.pipeline as pipeline_mod

    pipe = make_pipe(components)
    unet_calls, scales_seen = [], []
    unet = pipe.c.unet
    real_forward = unet.forward
    monkeypatch.setattr(unet, "forward", lambda *a, **k: unet_calls.append(k) or real_forward(*a, **k))
    real_cfg = pipeline_mod.CFGDenoiser
    monkeypatch.setattr(pipeline_mod, "CFGDenoiser",
                        lambda d, c, u, scales: scales_seen.append(scales.clone()) or real_cfg(d, c, u, scales))
    frames, masks = clip()
    pipe(frames, masks, torch.Generator().manual_seed(0))
    assert unet_calls
    for kw in unet_calls:
        m, fw, bw = kw.get("masks"), kw.get("flows_fw"), kw.get("flows_bw")
        assert m is not None and fw is not None and bw is not None
        assert m.shape[1:] == (N, 1, H // 8, W // 8) and fw.shape[1:] == bw.shape[1:] == (N - 1, 2, H // 8, W // 8)
        assert m[0, :, 0, 2:6, 5:11].all() and m[0].sum() == N * 4 * 6  # the hole, cell for cell
        assert fw[0, :, 0].median() < -SHIFT / 8 / 2 < 0 < SHIFT / 8 / 2 < bw[0, :, 0].median()
        ids, sampling = kw["added_time_ids"], pipe.cfg.sampling  # SVD's micro-conditioning, as configured
        expected = torch.tensor([[sampling.fps, sampling.motion_bucket_id, sampling.noise_aug_strength]])
        assert torch.allclose(ids, expected.expand(len(ids), 3))
    s = scales_seen[0]
    assert s.shape == (N,) and s[0] == pipe.cfg.sampling.min_guidance_scale and s[-1] == pipe.cfg.sampling.max_guidance_scale
    assert (s[1:] > s[:-1]).all()


def test_memory_switches_keep_the_output_and_inversion_changes_the_hole(components):
    frames, masks = clip()
    base = make_pipe(components)(frames, masks, torch.Generator().manual_seed(0))
    # window.decode_chunk_size is not among them: SVD's temporal VAE decoder mixes the frames of a chunk.
    lean = make_pipe(components, "memory.offload=model", "memory.forward_chunk_size=1", "memory.attention=default")(
        frames, masks, torch.Generator().manual_seed(0))
    assert np.abs(base.astype(int) - lean.astype(int)).max() <= 2  # same computation, other kernels (measured 1)
    inverted = make_pipe(components, "sampling.fill_source=inversion", "sampling.inversion_steps=2")(
        frames, masks, torch.Generator().manual_seed(0))
    hole = masks.astype(bool)
    assert np.array_equal(inverted[~hole], frames[~hole])
    assert np.abs(inverted[hole].astype(int) - base[hole].astype(int)).mean() > 1


def test_training_conditioning_never_sees_hole_pixels(components, monkeypatch):
    from fffvdi.inpaint.conditioner import Conditioner
    from fffvdi.train.config import TrainConfig
    from fffvdi.train.steps import encode_batch

    cfg = load_config(TrainConfig, None, ["train.drop_image_embeds=0", "train.drop_cond_latents=0", "train.drop_both=0"])
    t = cfg.train
    conditioner = Conditioner(components, cfg.flow, torch.device("cpu"), torch.float32, t.vae_chunk_size)  # as train.py
    seen = []
    real = conditioner.encode
    monkeypatch.setattr(conditioner, "encode", lambda px, *a: seen.append(px.clone()) or real(px, *a))
    frames = torch.full((1, N, 3, H, W), 0.8)  # a bright clip: any leak of it into the hole shows
    masks = torch.zeros(1, N, 1, H, W)
    masks[..., 16:48, 40:88] = 1
    flows = torch.zeros(1, N - 1, 2, H, W)
    z0, cond = encode_batch(conditioner, frames, masks, flows, flows, t, torch.Generator().manual_seed(0))
    (px,) = seen
    hole = (masks > 0).expand_as(px)
    assert px[hole].mean().abs() < 0.05 and (px[~hole] - 0.8).mean().abs() < 0.05  # noise only / frame + noise
    ids = cond.added_time_ids[0]  # the noise's strength is what the UNet is told, with SVD's fps and motion
    assert px[hole].std().item() == pytest.approx(ids[2].item(), rel=0.05) and ids[2] > 0
    assert ids[0] == t.fps and ids[1] == t.motion_bucket_id
    assert cond.masks is not None and cond.masks.shape == (1, N, 1, H // 8, W // 8) and cond.masks.sum() == N * 4 * 6


def test_conditioning_latents_mode_or_posterior_sample(components):
    pipe = make_pipe(components)
    px = torch.rand(1, 2, 3, H, W) * 2 - 1
    mode = pipe.cond.encode(px)
    assert torch.equal(mode, pipe.cond.encode(px))  # deterministic
    a = pipe.cond.encode(px, torch.Generator().manual_seed(1))
    b = pipe.cond.encode(px, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, mode)  # a seeded draw around the mode


def test_model_offload_brings_each_part_to_the_device_only_for_its_use(components, monkeypatch):
    """memory.offload=model parks UNet, VAE and CLIP on the CPU and moves each to the device and back around its
    use (there and back in pairs); without it nothing moves."""
    moves = []
    for name in ("unet", "vae", "image_encoder"):
        module = getattr(components, name)
        real = module.to
        monkeypatch.setattr(module, "to", lambda *a, _n=name, _r=real, **k: moves.append((_n, str(a[0]))) or _r(*a, **k))
    frames, masks = clip()
    make_pipe(components)(frames, masks, torch.Generator().manual_seed(0))
    assert moves == []
    pipe = make_pipe(components, "memory.offload=model")
    assert moves == [("unet", "cpu"), ("vae", "cpu"), ("image_encoder", "cpu")]  # parked
    moves.clear()
    pipe(frames, masks, torch.Generator().manual_seed(0))
    for name in ("unet", "vae", "image_encoder"):
        mine = [dev for n, dev in moves if n == name]
        assert mine and len(mine) % 2 == 0 and mine[0::2] == [str(pipe.device)] * (len(mine) // 2), (name, mine)
        assert mine[1::2] == ["cpu"] * (len(mine) // 2)
