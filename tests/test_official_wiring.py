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
    base, overrides, weights = inputs
    out = base / "never"
    with pytest.raises(ConfigError, match=r"flow\.completion_weights and flow\.raft_weights"):
        train_tiny(overrides, f"checkpoint.output_dir={out}", config=OFFICIAL)
    with pytest.raises(ConfigError, match=r"flow\.raft_weights='/nope/raft-things.pth' does not exist.*"
                                          r"flow\.completion_weights='/nope/rfc.pth' does not exist"):
        train_tiny(overrides, f"checkpoint.output_dir={out}", "flow.raft_weights=/nope/raft-things.pth",
                   "flow.completion_weights=/nope/rfc.pth", config=OFFICIAL)
    assert not out.exists()
