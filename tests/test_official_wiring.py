"""configs/train_official.yaml end to end on the tiny model: one step's wiring (official masks drawn, RAFT on the
unmasked frames, the completer given the masks, the official module given pixel-unit flows) and its refusals."""
import pytest
import torch

import fffvdi.data.masks as masks_module
import fffvdi.flow.estimators as estimators
import fffvdi.models.unet as unet_module
from fffvdi.errors import ConfigError
from fffvdi.flow.completion import ProPainterCompleter
from fffvdi.flow.propainter import RecurrentFlowCompleteNet
from fffvdi.flow.resize import release_latent_inputs

from conftest import train_inputs, train_tiny

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
OFFICIAL = "train_official.yaml"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_svd_dir):
    base = tmp_path_factory.mktemp("official")
    weights = base / "recurrent_flow_completion.pth"
    torch.manual_seed(0)
    torch.save(RecurrentFlowCompleteNet().state_dict(), weights)  # the release's plain state-dict format
    overrides = [*train_inputs(base, tiny_svd_dir, num_videos=2, num_frames=10), "data.num_frames=6",
                 "data.size=[64,128]", "data.num_workers=0", "model.variant=null", "train.max_steps=1",
                 "train.mixed_precision='no'", "train.gradient_checkpointing=false", "train.weight_dtype=float32",
                 "checkpoint.every_steps=1", "flow.raft_iters=1"]
    return base, overrides, weights


def test_one_official_step_wires_masks_raft_completion_and_pixel_flows(inputs, monkeypatch):
    base, overrides, weights = inputs
    seen = {"boxes": 0}
    real_box, real_estimate, real_complete = masks_module.official_box, estimators.RAFTFlow.estimate, \
        ProPainterCompleter.complete_pair

    def box(*args, **kwargs):
        seen["boxes"] += 1
        return real_box(*args, **kwargs)

    def estimate(self, frames):
        seen["raft"] = frames.clone()
        return real_estimate(self, frames)

    def complete(self, fw, bw, masks, frames=None):
        seen["masks"] = masks.clone()
        seen["completed"] = real_complete(self, fw, bw, masks, frames)
        return seen["completed"]

    monkeypatch.setattr(masks_module, "official_box", box)
    monkeypatch.setattr(estimators.RAFTFlow, "estimate", estimate)
    monkeypatch.setattr(ProPainterCompleter, "complete_pair", complete)
    modules = []

    def spy_module(module, args, output):
        modules.append((module.config, args[1].clone(), args[2].clone()))

    real_init = unet_module.FFFVDIUNet.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.propagation.register_forward_hook(spy_module)

    monkeypatch.setattr(unet_module.FFFVDIUNet, "__init__", init)
    result = train_tiny(overrides, f"checkpoint.output_dir={base / 'run'}", "flow.raft_weights=random",
                            f"flow.completion_weights={weights}", config=OFFICIAL)
    assert result.global_step == 1 and seen["boxes"] >= 2  # the release's generator drew the clips' masks

    # RAFT saw the unmasked frames: the hole shows texture, not the constant a masked frame would have there.
    hole = seen["masks"][:, :, 0] > 0.5  # [B, F, H, W]
    assert hole.any(), "pick another seed: this clip drew an empty official mask"
    raft_frames = seen["raft"]  # [B, F, 3, H, W] in [0, 1]
    assert raft_frames.permute(0, 1, 3, 4, 2)[hole].std() > 0.05

    # The official module got the completed flows at latent size in image pixels and masks sampled top-left.
    config, masks_l, flows_fw_l = modules[0]
    assert config["arch"] == "official" and config["flow_units"] == "pixels" and not config["identity_init"]
    expected_fw, expected_masks = release_latent_inputs(seen["completed"][0], seen["masks"], masks_l.shape[-2:])
    torch.testing.assert_close(flows_fw_l, expected_fw)
    torch.testing.assert_close(masks_l, expected_masks)
    assert flows_fw_l.abs().max() > 0  # not vacuous: real flows reached it


def test_official_config_stops_before_anything_is_written_without_both_weight_files(inputs):
    base, overrides, _ = inputs
    out = base / "never"
    with pytest.raises(ConfigError, match=r"flow\.completion_weights and flow\.raft_weights"):
        train_tiny(overrides, f"checkpoint.output_dir={out}", config=OFFICIAL)
    with pytest.raises(ConfigError, match=r"flow\.raft_weights='/nope/raft-things.pth' does not exist.*"
                                          r"flow\.completion_weights='/nope/rfc.pth' does not exist"):
        train_tiny(overrides, f"checkpoint.output_dir={out}", "flow.raft_weights=/nope/raft-things.pth",
                   "flow.completion_weights=/nope/rfc.pth", config=OFFICIAL)
    assert not out.exists()


def test_inference_official_yaml_runs_the_release_choices(inputs, tiny_svd_dir, tmp_path, monkeypatch):
    """configs/inference_official.yaml on the tiny model: raw frame 0 for CLIP, fps id 6, no first-frame filling,
    box masks without dilation, frames stretched onto the canvas, RAFT + propainter, the official module."""
    import cv2
    import numpy as np

    import fffvdi.inpaint.pipeline as pipeline
    from conftest import load_script
    from fffvdi.models.unet import FFFVDIUNet

    _, _, weights = inputs
    torch.manual_seed(0)
    FFFVDIUNet.from_pretrained(tiny_svd_dir, subfolder="unet", propagation=dict(arch="official", identity_init=False)
                               ).save_pretrained(tmp_path / "ckpt")
    (tmp_path / "frames").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # 48x80 frames (5:3), stretched onto the 2:1 canvas
        cv2.imwrite(str(tmp_path / "frames" / f"{i:05d}.png"), rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
        mask = np.zeros((48, 80), np.uint8)
        mask[10:20, 20 + i : 30 + i] = 255
        mask[30, 60] = 255  # a stray pixel: box mode turns the frame's mask into one box covering both
        cv2.imwrite(str(tmp_path / "masks" / f"{i:05d}.png"), mask)
    seen = {}
    real_clip, real_cond = pipeline.clip_source_image, pipeline.svd_conditioning
    monkeypatch.setattr(pipeline, "clip_source_image", lambda src, v, m, *a: seen.update(clip=src, canvas=v.shape,
                                                                                         holes=m.clone()) or real_clip(src, v, m, *a))
    monkeypatch.setattr(pipeline, "svd_conditioning", lambda *a, **k: seen.update(fps=a[3]) or real_cond(*a, **k))
    monkeypatch.setattr(pipeline, "fill_first_frame_noise", lambda *a, **k: pytest.fail("the release has no filling"))
    out = tmp_path / "out"
    code = load_script("inference").main([
        "--video", str(tmp_path / "frames"), "--mask", str(tmp_path / "masks"), "--output", str(out),
        "--config", "configs/inference_official.yaml", "--checkpoint", str(tmp_path / "ckpt"),
        f"model.pretrained={tiny_svd_dir}", "model.dtype=float32", "model.device=cpu", "sampling.num_steps=2",
        "window.height=64", "window.width=128", "window.num_frames=6", "flow.raft_weights=random", "flow.raft_iters=1",
        f"flow.completion_weights={weights}"])
    assert code == 0 and len(list((out / "frames").glob("*.png"))) == 6
    assert seen["clip"] == "raw" and seen["fps"] == 6
    assert seen["canvas"][-2:] == (64, 128)  # 48x80 stretched onto 64x128: no padding
    hole = seen["holes"][0, 0, 0]  # frame 0 on the canvas: one box from row 10 to 30 and column 20 to 60, scaled
    rows, cols = hole.any(1).nonzero()[:, 0], hole.any(0).nonzero()[:, 0]
    assert hole[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # a filled box, not dilated beyond its corners
    assert abs(int(rows[0]) - round(10 * 64 / 48)) <= 1 and abs(int(cols[-1]) - round(60 * 128 / 80)) <= 2


def test_config_reaches_the_clip_dataset_and_the_cache_key(inputs):
    """data.resize from the config reaches the training dataset; the flow units are part of the cache key."""
    from fffvdi.config import load_config
    from fffvdi.train.cache import cache_settings
    from fffvdi.train.config import TrainConfig
    from fffvdi.train.data import build_clip_dataset

    base, overrides, _ = inputs
    root = next(o for o in overrides if o.startswith("data.root="))
    for resize in ("area", "bicubic"):
        cfg = load_config(TrainConfig, None, [root, "data.num_frames=6", f"data.resize={resize}"])
        assert build_clip_dataset(cfg, seed=0).resize == resize
    cfg = load_config(TrainConfig, None, [root])
    assert cache_settings(cfg, "cells") != cache_settings(cfg, "pixels")
