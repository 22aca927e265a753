"""flow.raft_weights takes the original princeton-vl/RAFT checkpoints (raft-things.pth, raft-small.pth) as well as
torchvision's RAFT state dicts: key names, bit-equal flows, one-line errors, and the input the network sees."""
import re

import pytest
import torch
from torchvision.models.optical_flow import raft_large, raft_small

from fffvdi.errors import ModelLoadError
from fffvdi.flow.estimators import RAFTFlow
from fffvdi.flow.raft_weights import torchvision_name

# Written from the two sources (princeton-vl/RAFT core/extractor.py + core/update.py, torchvision's raft.py), one key
# of each module kind; not derived from fffvdi's table.
LARGE_KEYS = {
    "module.fnet.conv1.weight": "feature_encoder.convnormrelu.0.weight",
    "fnet.conv1.bias": "feature_encoder.convnormrelu.0.bias",  # without the DataParallel prefix
    "module.cnet.norm1.running_mean": "context_encoder.convnormrelu.1.running_mean",
    "module.fnet.layer1.0.conv1.weight": "feature_encoder.layer1.0.convnormrelu1.0.weight",
    "module.cnet.layer1.0.norm1.weight": "context_encoder.layer1.0.convnormrelu1.1.weight",
    "module.fnet.layer2.1.conv2.bias": "feature_encoder.layer2.1.convnormrelu2.0.bias",
    "module.cnet.layer3.1.norm2.running_var": "context_encoder.layer3.1.convnormrelu2.1.running_var",
    "module.cnet.layer2.0.norm3.weight": "context_encoder.layer2.0.downsample.1.weight",  # norm3 is downsample[1]
    "module.cnet.layer2.0.downsample.1.weight": "context_encoder.layer2.0.downsample.1.weight",
    "module.cnet.layer3.0.norm3.num_batches_tracked": "context_encoder.layer3.0.downsample.1.num_batches_tracked",
    "module.fnet.layer3.0.downsample.0.weight": "feature_encoder.layer3.0.downsample.0.weight",
    "module.cnet.conv2.weight": "context_encoder.conv.weight",
    "module.update_block.encoder.convc1.weight": "update_block.motion_encoder.convcorr1.0.weight",
    "module.update_block.encoder.convc2.bias": "update_block.motion_encoder.convcorr2.0.bias",
    "module.update_block.encoder.convf1.weight": "update_block.motion_encoder.convflow1.0.weight",
    "module.update_block.encoder.convf2.weight": "update_block.motion_encoder.convflow2.0.weight",
    "module.update_block.encoder.conv.bias": "update_block.motion_encoder.conv.0.bias",
    "module.update_block.gru.convz1.weight": "update_block.recurrent_block.convgru1.convz.weight",
    "module.update_block.gru.convr1.bias": "update_block.recurrent_block.convgru1.convr.bias",
    "module.update_block.gru.convq1.weight": "update_block.recurrent_block.convgru1.convq.weight",
    "module.update_block.gru.convz2.weight": "update_block.recurrent_block.convgru2.convz.weight",
    "module.update_block.gru.convq2.weight": "update_block.recurrent_block.convgru2.convq.weight",
    "module.update_block.flow_head.conv1.weight": "update_block.flow_head.conv1.weight",
    "module.update_block.flow_head.conv2.bias": "update_block.flow_head.conv2.bias",
    "module.update_block.mask.0.weight": "mask_predictor.convrelu.0.weight",
    "module.update_block.mask.2.weight": "mask_predictor.conv.weight",
}
SMALL_KEYS = {
    "module.fnet.conv1.weight": "feature_encoder.convnormrelu.0.weight",
    "module.cnet.layer1.0.conv1.weight": "context_encoder.layer1.0.convnormrelu1.0.weight",
    "module.fnet.layer2.0.conv2.weight": "feature_encoder.layer2.0.convnormrelu2.0.weight",
    "module.fnet.layer3.1.conv3.bias": "feature_encoder.layer3.1.convnormrelu3.0.bias",
    "module.cnet.layer2.0.downsample.0.weight": "context_encoder.layer2.0.downsample.0.weight",
    "module.cnet.conv2.bias": "context_encoder.conv.bias",
    "module.update_block.encoder.convc1.weight": "update_block.motion_encoder.convcorr1.0.weight",
    "module.update_block.encoder.conv.weight": "update_block.motion_encoder.conv.0.weight",
    "module.update_block.gru.convz.weight": "update_block.recurrent_block.convgru1.convz.weight",
    "module.update_block.gru.convq.bias": "update_block.recurrent_block.convgru1.convq.bias",
    "module.update_block.flow_head.conv2.weight": "update_block.flow_head.conv2.weight",
}


@pytest.mark.parametrize("variant,table,builder", [("large", LARGE_KEYS, raft_large), ("small", SMALL_KEYS, raft_small)])
def test_original_key_names_map_to_torchvision_names(variant, table, builder):
    torchvision_keys = set(builder(weights=None).state_dict())
    assert set(table.values()) <= torchvision_keys  # the hand-written targets exist
    assert {k: torchvision_name(k, variant) for k in table} == table


@pytest.mark.parametrize("variant,key", [
    ("large", "module.fnet.layer4.0.conv1.weight"),  # no fourth layer
    ("large", "module.update_block.gru.convz.weight"),  # the large GRU has two passes, convz1 / convz2
    ("large", "module.fnet.layer1.0.conv3.weight"),  # ResidualBlocks have two convs
    ("small", "module.update_block.mask.0.weight"),  # raft_small upsamples without a mask head
    ("small", "module.update_block.encoder.convc2.weight"),  # one correlation conv in the small motion encoder
    ("small", "module.update_block.gru.convz1.weight"),
    ("large", "module.fnet.conv1.weight_g"),
])
def test_keys_without_a_counterpart_map_to_none(variant, key):
    assert torchvision_name(key, variant) is None


# The inverse, torchvision -> original, written separately from the sources.
STEM = {"convnormrelu.0": "conv1", "convnormrelu.1": "norm1", "conv": "conv2"}
RESIDUAL = {"convnormrelu1.0": "conv1", "convnormrelu1.1": "norm1", "convnormrelu2.0": "conv2",
            "convnormrelu2.1": "norm2", "downsample.0": "downsample.0", "downsample.1": "downsample.1"}
BOTTLENECK = {**RESIDUAL, "convnormrelu3.0": "conv3", "convnormrelu3.1": "norm3"}
UPDATE_LARGE = {
    "update_block.motion_encoder.convcorr1.0": "update_block.encoder.convc1",
    "update_block.motion_encoder.convcorr2.0": "update_block.encoder.convc2",
    "update_block.motion_encoder.convflow1.0": "update_block.encoder.convf1",
    "update_block.motion_encoder.convflow2.0": "update_block.encoder.convf2",
    "update_block.motion_encoder.conv.0": "update_block.encoder.conv",
    "update_block.recurrent_block.convgru1.convz": "update_block.gru.convz1",
    "update_block.recurrent_block.convgru1.convr": "update_block.gru.convr1",
    "update_block.recurrent_block.convgru1.convq": "update_block.gru.convq1",
    "update_block.recurrent_block.convgru2.convz": "update_block.gru.convz2",
    "update_block.recurrent_block.convgru2.convr": "update_block.gru.convr2",
    "update_block.recurrent_block.convgru2.convq": "update_block.gru.convq2",
    "update_block.flow_head.conv1": "update_block.flow_head.conv1",
    "update_block.flow_head.conv2": "update_block.flow_head.conv2",
    "mask_predictor.convrelu.0": "update_block.mask.0",
    "mask_predictor.conv": "update_block.mask.2",
}
UPDATE_SMALL = {
    "update_block.motion_encoder.convcorr1.0": "update_block.encoder.convc1",
    "update_block.motion_encoder.convflow1.0": "update_block.encoder.convf1",
    "update_block.motion_encoder.convflow2.0": "update_block.encoder.convf2",
    "update_block.motion_encoder.conv.0": "update_block.encoder.conv",
    "update_block.recurrent_block.convgru1.convz": "update_block.gru.convz",
    "update_block.recurrent_block.convgru1.convr": "update_block.gru.convr",
    "update_block.recurrent_block.convgru1.convq": "update_block.gru.convq",
    "update_block.flow_head.conv1": "update_block.flow_head.conv1",
    "update_block.flow_head.conv2": "update_block.flow_head.conv2",
}


def original_checkpoint(tv_state: dict, large: bool) -> dict:
    """torchvision state dict -> what the original RAFT wrapped in DataParallel saves (norm3 twice, `module.`)."""
    out = {}
    for key, value in tv_state.items():
        module, param = key.rsplit(".", 1)
        enc = re.fullmatch(r"(feature|context)_encoder\.(?:(layer\d\.\d)\.)?(.+)", module)
        if enc:
            net = "fnet" if enc[1] == "feature" else "cnet"
            names = [(RESIDUAL if large else BOTTLENECK)[enc[3]]] if enc[2] else [STEM[enc[3]]]
            if enc[2] and enc[3] == "downsample.1":  # the shared norm module, saved under both names
                names.append("norm3" if large else "norm4")
            for name in names:
                out[".".join(filter(None, ["module", net, enc[2], name, param]))] = value
        else:
            out[f"module.{(UPDATE_LARGE if large else UPDATE_SMALL)[module]}.{param}"] = value
    return out


def random_raft(builder, seed: int = 0) -> torch.nn.Module:
    """A torchvision RAFT whose every tensor, batch-norm statistics included, is random (so any mix-up shows)."""
    torch.manual_seed(seed)
    model = builder(weights=None).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("running_mean", ".1.weight", ".1.bias")) and t.ndim == 1:
                t.add_(0.1 * torch.randn(t.shape, generator=g))  # batch-norm affine and means
            else:
                t.add_(0.01 * torch.randn(t.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def frames():
    return torch.rand(1, 2, 3, 128, 128, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("variant,builder", [("large", raft_large), ("small", raft_small)])
def test_original_checkpoint_loads_and_gives_bit_equal_flows(tmp_path, frames, variant, builder):
    model = random_raft(builder)
    tv_state = model.state_dict()
    original = original_checkpoint(tv_state, large=variant == "large")
    assert all(k.startswith("module.") for k in original)
    if variant == "large":
        assert "module.cnet.layer2.0.norm3.running_var" in original and len(original) > len(tv_state)
    path = tmp_path / f"raft-{variant}-original.pth"
    torch.save(original, path)

    loaded = RAFTFlow(variant=variant, weights_path=str(path), iters=2)
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, tv_state[name]), name
    reference = RAFTFlow(variant=variant, random_init=True, iters=2)
    reference.model = model  # the torchvision model the weights came from
    fw, bw = loaded(frames)
    fw_ref, bw_ref = reference(frames)
    assert torch.isfinite(fw).all() and fw.abs().max() > 0
    assert torch.equal(fw, fw_ref) and torch.equal(bw, bw_ref)


def test_torchvision_layout_still_loads(tmp_path):
    tv_state = random_raft(raft_large, seed=5).state_dict()
    torch.save(tv_state, tmp_path / "tv.pth")
    torch.save({"state_dict": tv_state}, tmp_path / "wrapped.pth")
    for name in ("tv.pth", "wrapped.pth"):
        model = RAFTFlow("large", weights_path=str(tmp_path / name)).model
        for key, value in model.state_dict().items():
            assert torch.equal(value, tv_state[key]), (name, key)


def load_error(path, variant: str = "large") -> str:
    """The ModelLoadError message of loading `path`, checked to be one line naming the setting and the file."""
    with pytest.raises(ModelLoadError) as info:
        RAFTFlow(variant, weights_path=str(path))
    message = str(info.value)
    assert "\n" not in message and "flow.raft_weights" in message and str(path) in message, message
    return message


def test_bad_files_fail_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.pth"
    torch.save({"encoder.weight": torch.zeros(3), "head.bias": torch.ones(1)}, garbage)
    assert "neither" in load_error(garbage) and "'encoder.weight'" in load_error(garbage)
    not_torch = tmp_path / "not_torch.pth"
    not_torch.write_bytes(b"\x00not a pickle\n" * 10)
    assert "not a readable torch file" in load_error(not_torch)
    no_tensors = tmp_path / "numbers.pth"
    torch.save({"a": 1}, no_tensors)
    assert "no {name: tensor} state dict" in load_error(no_tensors)
    assert "does not exist" in load_error(tmp_path / "missing.pth")


def test_original_checkpoints_with_wrong_keys_name_the_first_culprit(tmp_path):
    original = original_checkpoint(random_raft(raft_large, seed=2).state_dict(), large=True)

    extra = {**original, "module.fnet.layer4.0.conv1.weight": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.pth")
    assert "'module.fnet.layer4.0.conv1.weight'" in load_error(tmp_path / "extra.pth")

    lacking = {k: v for k, v in original.items() if k != "module.update_block.gru.convq2.bias"}
    torch.save(lacking, tmp_path / "lacking.pth")
    assert "'update_block.recurrent_block.convgru2.convq.bias'" in load_error(tmp_path / "lacking.pth")

    clash = dict(original)
    clash["module.cnet.layer3.0.norm3.bias"] = clash["module.cnet.layer3.0.norm3.bias"] + 1  # norm3 != downsample.1
    torch.save(clash, tmp_path / "clash.pth")
    assert "'module.cnet.layer3.0.norm3.bias'" in load_error(tmp_path / "clash.pth")

    small = original_checkpoint(random_raft(raft_small).state_dict(), large=False)
    torch.save(small, tmp_path / "raft-small.pth")
    assert "set flow.method=raft_small" in load_error(tmp_path / "raft-small.pth", "large")
    torch.save(original, tmp_path / "raft-things.pth")
    assert "set flow.method=raft_large" in load_error(tmp_path / "raft-things.pth", "small")


def test_network_input_matches_the_original_normalisation_without_padding():
    """Sides that are multiples of 8 (and >= 128): the network sees 2 * (img / 255) - 1 exactly, unpadded, as the
    original RAFT's forward computes after InputPadder (which pads nothing there)."""
    img = torch.randint(0, 256, (1, 2, 3, 136, 128), generator=torch.Generator().manual_seed(4)).float()
    raft = RAFTFlow("small", random_init=True, iters=1)
    seen = []
    hook = raft.model.feature_encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        raft(img / 255.0)
    finally:
        hook.remove()
    expected = torch.cat([2 * (img[:, 0] / 255.0) - 1.0, 2 * (img[:, 1] / 255.0) - 1.0])  # (image1, image2)
    assert seen[0].shape == expected.shape and torch.equal(seen[0], expected)
