"""Conditioning cache (data.cache_dir), frame windows (train.frames_per_step) and offloading: tiny model on CPU."""
import math
from pathlib import Path

import pytest
import torch

from conftest import reset_accelerate_state as _reset, train_inputs, train_tiny as _run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_svd_dir):
    base = tmp_path_factory.mktemp("cache")
    overrides = [*train_inputs(base, tiny_svd_dir, num_videos=3, num_frames=8, seed=1), "data.num_frames=6",
                 "optim.weight_decay=0.0", "checkpoint.every_steps=0", "data.epoch_cycle=1",
                 "train.cond_aug_space=latent", "train.frames_per_step=4", "train.drop_both=0.2"]
    return base, overrides


def _spy(monkeypatch):
    """Count clip encodings and record the frame count of every training target."""
    import fffvdi.train.steps as tc
    from fffvdi.diffusion.edm import EDMDenoiser

    seen = {"encodes": 0, "frames": []}
    encode, loss = tc.encode_clip, EDMDenoiser.loss

    def counting_encode(*args, **kwargs):
        seen["encodes"] += 1
        return encode(*args, **kwargs)

    def recording_loss(self, z0, *args, **kwargs):
        seen["frames"].append(z0.shape[1])
        return loss(self, z0, *args, **kwargs)

    monkeypatch.setattr(tc, "encode_clip", counting_encode)
    monkeypatch.setattr(EDMDenoiser, "loss", recording_loss)
    return seen


def test_cache_gives_the_losses_of_on_the_fly_encoding(setup, monkeypatch):
    """Two epochs of 3 clips: the first writes 3 entries, the second reads them; every loss equals a run without it."""
    base, overrides = setup
    cached = _spy(monkeypatch)
    a = _run(overrides, f"checkpoint.output_dir={base / 'a'}", f"data.cache_dir={base / 'cache'}",
             "train.max_steps=6")
    _reset()
    assert cached["encodes"] == 3  # epoch 2 encoded nothing
    assert len(list((base / "cache").glob("*.pt"))) == 3
    assert cached["frames"] == [4] * 6  # a 4-frame window of the 6-frame encoded clip per step
    fresh = _spy(monkeypatch)
    b = _run(overrides, f"checkpoint.output_dir={base / 'b'}", "train.max_steps=6")
    assert fresh["encodes"] == 6
    assert sorted(a.losses) == sorted(b.losses) == list(range(1, 7))
    for step in a.losses:  # the cache stores float16: equal up to that rounding
        assert a.losses[step] == pytest.approx(b.losses[step], rel=2e-3, abs=1e-5), step
    assert len({round(v, 6) for v in a.losses.values()}) == 6  # distinct steps: the comparison is not trivial


def test_cache_key_follows_the_augmentation_draw_and_settings(tmp_path):
    from fffvdi.train.cache import ConditioningCache

    g = torch.Generator().manual_seed(0)
    frames = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    masks = (torch.rand(4, 1, 16, 16, generator=g) > 0.7).float()
    cache = ConditioningCache(tmp_path, {"clip_source": "masked"})
    key = cache.key(frames, masks, "vid")
    assert key == ConditioningCache(tmp_path, {"clip_source": "masked"}).key(frames.clone(), masks.clone(), "vid")
    others = [cache.key(frames.flip(-1), masks.flip(-1), "vid"),  # horizontal flip
              cache.key(frames.flip(0), masks.flip(0), "vid"),  # time reversal
              cache.key(frames, 1 - masks, "vid"),  # other masks
              ConditioningCache(tmp_path, {"clip_source": "raw"}).key(frames, masks, "vid")]
    assert len({key, *others}) == 5
    enc = {k: torch.randn(1, 3, 2) for k in ("z_mean", "z_std", "c_mean", "c_std", "embeds", "flows_fw", "flows_bw",
                                              "masks")}
    stored = cache.save(key, enc)
    loaded = cache.load(key, torch.device("cpu"))
    assert all(torch.equal(stored[k], loaded[k]) for k in enc)
    assert all(torch.allclose(stored[k], enc[k], atol=4e-3) for k in enc)
    assert cache.load("missing", torch.device("cpu")) is None and (cache.hits, cache.misses) == (1, 1)


def test_window_start_covers_every_start_and_draws_nothing_without_a_window():
    from fffvdi.train.steps import window_start

    g = torch.Generator().manual_seed(0)
    starts = {window_start(6, 4, g) for _ in range(200)}
    assert starts == {0, 1, 2}
    state = g.get_state()
    assert window_start(6, None, g) == 0 and window_start(6, 6, g) == 0
    assert torch.equal(g.get_state(), state)  # the default run's noise stream is unchanged


def test_pixel_space_run_with_a_frame_window(setup, monkeypatch):
    import fffvdi.train.steps as training

    base, overrides = setup
    seen = _spy(monkeypatch)
    encode, flow_errors = training.encode_batch, []

    def checking_encode(conditioner, frames, masks, flows_fw, flows_bw, *args):
        """The flows handed over must be the window's own pairs, forward as forward."""
        fw, bw = conditioner.flow_fn((frames + 1) / 2)
        flow_errors.append(((flows_fw - fw).abs().max().item(), (flows_bw - bw).abs().max().item(),
                            (flows_fw - bw).abs().max().item()))
        return encode(conditioner, frames, masks, flows_fw, flows_bw, *args)

    monkeypatch.setattr(training, "encode_batch", checking_encode)
    result = _run(overrides, f"checkpoint.output_dir={base / 'pixel'}", "train.cond_aug_space=pixel",
                  "train.max_steps=2", "train.offload_frozen=true")
    assert seen["frames"] == [4, 4] and seen["encodes"] == 0  # pixel path: the window's frames go through the VAE
    assert len(flow_errors) == 2 and all(e_fw < 1e-4 and e_bw < 1e-4 < e_swap for e_fw, e_bw, e_swap in flow_errors), \
        flow_errors
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="offloading moves modules between a GPU and the CPU")
def test_offloader_returns_modules_to_the_cpu():
    from fffvdi.inpaint.conditioner import offloader

    layer = torch.nn.Linear(4, 4)
    with offloader(torch.device("cuda"))(layer) as m:
        assert m.weight.device.type == "cuda"
    assert layer.weight.device.type == "cpu"


def test_draw_conditioning_takes_the_window_of_every_field():
    from omegaconf import OmegaConf

    from fffvdi.train.config import TrainLoopConfig
    from fffvdi.train.steps import draw_conditioning

    t = OmegaConf.merge(OmegaConf.structured(TrainLoopConfig), dict(drop_image_embeds=0, drop_cond_latents=0,
                                                                   drop_both=0, cond_aug_mean=-30.0, cond_aug_std=0))
    b, f, h, w = 2, 6, 3, 3
    frame_id = torch.arange(f, dtype=torch.float32).view(1, f, 1, 1, 1)
    enc = dict(z_mean=frame_id.expand(b, f, 4, h, w), z_std=torch.zeros(b, f, 4, h, w),
               c_mean=10 + frame_id.expand(b, f, 4, h, w), c_std=torch.ones(b, f, 4, h, w),
               embeds=torch.arange(3, dtype=torch.float32).view(1, 3, 1).expand(b, 3, 8),  # 3 window starts
               flows_fw=frame_id[:, 1:].expand(b, f - 1, 2, h, w), flows_bw=-frame_id[:, 1:].expand(b, f - 1, 2, h, w),
               masks=frame_id.expand(b, f, 1, h, w))
    z0, cond = draw_conditioning(enc, t, 0.5, 2, 4, torch.Generator().manual_seed(0))
    window = torch.arange(2, 6, dtype=torch.float32).view(1, 4, 1, 1, 1)
    assert torch.equal(z0, (0.5 * window).expand(b, 4, 4, h, w))  # std 0: the scaled mean of frames 2..5
    assert torch.allclose(cond.latents, 10 + window.expand(b, 4, 4, h, w), atol=1e-9)  # sigma_c = e^-30: mode
    assert torch.equal(cond.masks, window.expand(b, 4, 1, h, w))
    assert torch.equal(cond.flows_fw, window[:, 1:].expand(b, 3, 2, h, w))  # the pairs inside the window
    assert torch.equal(cond.flows_bw, -window[:, 1:].expand(b, 3, 2, h, w))
    assert torch.equal(cond.image_embeds, torch.full((b, 1, 8), 2.0))  # CLIP of the window's first frame
    t.cond_latents = "sample"  # a posterior draw: std 1 moves the latents
    _, drawn = draw_conditioning(enc, t, 0.5, 2, 4, torch.Generator().manual_seed(0))
    assert (drawn.latents - cond.latents).abs().mean() > 0.5
    t.cond_latents, t.cond_aug_mean = "mode", math.log(0.5)  # sigma_c = 0.5 exactly (std 0)
    _, noisy = draw_conditioning(enc, t, 0.5, 2, 4, torch.Generator().manual_seed(0))
    assert (noisy.latents - cond.latents).std().item() == pytest.approx(0.5, rel=0.15)  # the augmentation noise ...
    assert torch.allclose(noisy.added_time_ids, torch.tensor([t.fps, t.motion_bucket_id, 0.5]).expand(b, 3))  # ... told


def test_the_24gb_config_trains_on_cpu_with_the_tiny_model(setup):
    """configs/train_24gb.yaml as written, scaled to the tiny model; only the CUDA-only optimizer is swapped."""
    base, _ = setup
    from fffvdi.config import load_config
    from fffvdi.train.config import TrainConfig

    cfg = load_config(TrainConfig, str(ROOT / "configs/train_24gb.yaml"), [])
    assert cfg.lora.enabled and cfg.optim.name == "adamw8bit" and cfg.train.gradient_checkpointing
    assert cfg.data.cache_dir and cfg.train.offload_frozen and cfg.data.num_frames == 25
    tiny = [f"model.pretrained={setup[1][0].split('=', 1)[1]}", "model.variant=null", f"data.root={base / 'data'}",
            "data.num_frames=6", "data.size=[64,64]", "data.num_workers=0", f"data.cache_dir={base / 'cache24'}",
            "optim.name=adamw", "train.mixed_precision='no'", "train.weight_dtype=float32", "train.max_steps=2",
            "logging.report_to=none", "validation.every_steps=0", f"checkpoint.output_dir={base / 'r24'}",
            "checkpoint.every_steps=2"]
    result = _run(tiny, config="train_24gb.yaml")
    assert result.global_step == 2 and len(list((base / "cache24").glob("*.pt"))) == 2
    assert (base / "r24" / "checkpoint-2" / "lora").is_dir() and (base / "r24" / "unet" / "config.json").is_file()
    from safetensors.torch import load_file

    adapters = load_file(str(base / "r24" / "checkpoint-2" / "lora" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapters.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # gradients reach the adapters through checkpointing
    from fffvdi.models.unet import FFFVDIUNet

    final = FFFVDIUNet.from_pretrained(base / "r24" / "unet").state_dict()  # lora.merge_on_save: a plain UNet
    assert not any("lora_" in k or "base_layer" in k for k in final)
    trained = {k.replace(".base_layer", ""): v for k, v in result.unet.state_dict().items() if "lora_" not in k}
    assert trained.keys() == final.keys() and all(torch.equal(trained[k], final[k]) for k in final)


def test_start_epoch_reaches_the_dataset_of_a_sharded_loader():
    """accelerate's set_epoch skips the dataset's when the sampler is sharded (DDP): every epoch would repeat the
    clip draws (and data.epoch_cycle would not apply); start_epoch sets both."""
    from accelerate.data_loader import prepare_data_loader

    from fffvdi.train.data import EpochCycle, start_epoch

    class Clips(torch.utils.data.Dataset):
        epoch = None

        def __len__(self):
            return 8

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __getitem__(self, i):
            return i

    clips = Clips()
    plain = torch.utils.data.DataLoader(EpochCycle(clips, 2), batch_size=1, shuffle=True)
    loader = prepare_data_loader(plain, num_processes=2, process_index=1, put_on_device=False, use_seedable_sampler=True)
    loader.set_epoch(3)
    assert clips.epoch is None  # what accelerate alone does with a sharded sampler
    start_epoch(loader, 3)
    assert clips.epoch == 1  # 3 % epoch_cycle


def test_latent_encoding_matches_pixel_encoding_of_the_window(tiny_svd_dir):
    """With no conditioning noise, no dropout and the posterior mode, the cached path (encode_clip + draw_conditioning
    of window [1, 5)) gives the conditioning of the pixel path (encode_batch on those frames): the hole is masked
    out of the conditioning latents, CLIP sees the window's first frame, forward flows stay forward."""
    from omegaconf import OmegaConf

    from fffvdi.inpaint.conditioner import Conditioner
    from fffvdi.models.loading import load_svd_components
    from fffvdi.train.config import TrainConfig
    from fffvdi.train.steps import draw_conditioning, encode_batch, encode_clip

    cfg = OmegaConf.structured(TrainConfig)
    t = OmegaConf.merge(cfg.train, dict(drop_image_embeds=0, drop_cond_latents=0, drop_both=0, cond_aug_mean=-30.0,
                                        cond_aug_std=0, cond_latents="mode", clip_source="masked"))
    comps = load_svd_components(str(tiny_svd_dir), None, dtype=torch.float32, device=torch.device("cpu"))
    cond = Conditioner(comps, cfg.flow, torch.device("cpu"), torch.float32, 8)
    g = torch.Generator().manual_seed(0)
    b, f, h, w = 1, 6, 64, 64
    frames = torch.rand(b, f, 3, h, w, generator=g) * 2 - 1
    masks = torch.zeros(b, f, 1, h, w)
    masks[..., 16:48, 8:40] = 1
    fw, bw = torch.randn(b, f - 1, 2, h, w, generator=g), 3 + torch.randn(b, f - 1, 2, h, w, generator=g)
    enc = encode_clip(cond, frames, masks, fw, bw, "masked", starts=3)
    _, latent = draw_conditioning(enc, t, 0.18, 1, 4, torch.Generator().manual_seed(1))
    _, pixel = encode_batch(cond, frames[:, 1:5], masks[:, 1:5], fw[:, 1:4], bw[:, 1:4], t,
                            torch.Generator().manual_seed(1))
    for name in ("latents", "image_embeds", "masks", "flows_fw", "flows_bw"):
        torch.testing.assert_close(getattr(latent, name), getattr(pixel, name), atol=1e-4, rtol=1e-4, msg=name)
    unmasked = encode_clip(cond, frames, torch.zeros_like(masks), fw, bw, "masked", starts=3)
    assert (unmasked["c_mean"] - enc["c_mean"]).abs().max() > 1e-2  # the hole changes the latents: not vacuous
    t.drop_image_embeds = 1.0  # CFG dropout of the image embeds only: in both paths the latents stay
    dropped = [draw_conditioning(enc, t, 0.18, 1, 4, torch.Generator().manual_seed(1))[1],
               encode_batch(cond, frames[:, 1:5], masks[:, 1:5], fw[:, 1:4], bw[:, 1:4], t,
                            torch.Generator().manual_seed(1))[1]]
    for d, full in zip(dropped, (latent, pixel)):
        assert not d.image_embeds.any() and full.image_embeds.abs().sum() > 0
        torch.testing.assert_close(d.latents, full.latents)
