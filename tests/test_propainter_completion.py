"""flow.completion=propainter: our ProPainter RecurrentFlowCompleteNet (fffvdi/flow/propainter.py).

Oracles written from the release's facts: the parameter count and a table of key shapes, strict loading of a plain
state dict, a functional forward (F.conv3d / F.conv2d / deform_conv2d on the state dict's tensors) the module must
match, and what `complete_pair` promises (holes of the source frames, time-reversed backward flows, the input
outside the holes bit for bit, hole values never seen). Random weights with randomised offset heads, small clips.
"""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torchvision.ops import deform_conv2d

from conftest import load_script
from fffvdi.config import FlowConfig, load_config
from fffvdi.errors import ConfigError, ModelLoadError
from fffvdi.flow.completion import FLOW_COMPLETERS, ProPainterCompleter, build_flow_completer
from fffvdi.flow.propainter import RecurrentFlowCompleteNet, load_propainter
from fffvdi.inpaint.checks import check_inference_config
from fffvdi.inpaint.conditioner import build_flow_fn
from fffvdi.inpaint.config import InferenceConfig
from fffvdi.train.checks import check_train_config
from fffvdi.train.config import TrainConfig

URL = "https://github.com/sczhou/ProPainter/releases/download/v0.1.0/recurrent_flow_completion.pth"

# Shapes of the released recurrent_flow_completion.pth (read off the release's layer definitions).
KEY_SHAPES = {
    "downsample.0.weight": (32, 3, 1, 5, 5),
    "encoder1.0.conv1.0.weight": (32, 32, 1, 3, 3),
    "encoder1.2.conv2.0.weight": (64, 64, 3, 1, 1),
    "encoder2.2.conv1.0.weight": (128, 64, 1, 3, 3),
    "mid_dilation.4.weight": (128, 128, 1, 3, 3),
    "feat_prop_module.deform_align.backward_.weight": (128, 256, 3, 3),
    "feat_prop_module.deform_align.forward_.bias": (128,),
    "feat_prop_module.deform_align.forward_.conv_offset.0.weight": (128, 384, 3, 3),
    "feat_prop_module.deform_align.backward_.conv_offset.6.weight": (432, 128, 3, 3),
    "feat_prop_module.backbone.backward_.0.weight": (128, 256, 3, 3),
    "feat_prop_module.backbone.forward_.0.weight": (128, 384, 3, 3),
    "feat_prop_module.fusion.weight": (128, 256, 1, 1),
    "decoder2.2.conv.weight": (64, 128, 3, 3),
    "decoder1.2.conv.weight": (32, 64, 3, 3),
    "upsample.2.conv.weight": (2, 32, 3, 3),
    "edgeDetector.projection.0.weight": (16, 2, 3, 3),
    "edgeDetector.out_layer.weight": (1, 16, 1, 1),
}


@pytest.fixture(scope="module")
def state():
    """A release-format state dict: random init, with the zero-initialised offset heads randomised so the deformable
    offsets are not all zero, and the last conv scaled up."""
    torch.manual_seed(0)
    sd = RecurrentFlowCompleteNet().state_dict()
    g = torch.Generator().manual_seed(1)
    for d in ("backward_", "forward_"):
        head = f"feat_prop_module.deform_align.{d}.conv_offset."
        for i in (0, 2, 4):  # the condition must matter: default-init activations shrink layer by layer
            sd[f"{head}{i}.weight"] = 2 * sd[f"{head}{i}.weight"]
        sd[f"{head}6.weight"] = 0.5 * torch.randn(sd[f"{head}6.weight"].shape, generator=g)  # offsets ~1 px
        sd[f"{head}6.bias"] = 0.1 * torch.randn(sd[f"{head}6.bias"].shape, generator=g)
    sd["upsample.2.conv.weight"] = 50 * sd["upsample.2.conv.weight"]  # predictions of a few pixels, like flows
    return sd


@pytest.fixture(scope="module")
def weights_file(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("propainter") / "recurrent_flow_completion.pth"
    torch.save(state, path)  # the release's format: a plain state dict
    return path


@pytest.fixture(scope="module")
def completer(weights_file):
    return build_flow_completer("propainter", weights=str(weights_file))


def clip(f=5, h=48, w=64, seed=0):
    """Random flows `[1, f-1, 2, h, w]` (fw, bw) and box holes `[1, f, 1, h, w]` moving 4 px right per frame."""
    g = torch.Generator().manual_seed(seed)
    fw, bw = (3 * torch.randn(1, f - 1, 2, h, w, generator=g) for _ in range(2))
    masks = torch.zeros(1, f, 1, h, w)
    for t in range(f):
        masks[0, t, 0, h // 4 : h // 4 + h // 3, 8 + 4 * t : 8 + 4 * t + w // 4] = 1
    return fw, bw, masks


def test_parameters_and_keys_are_the_releases():
    net = RecurrentFlowCompleteNet()
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 5_079_555
    assert len(sd) == 74
    assert {k: tuple(sd[k].shape) for k in KEY_SHAPES} == KEY_SHAPES
    assert {k.split(".")[0] for k in sd} == {"downsample", "encoder1", "encoder2", "mid_dilation", "feat_prop_module",
                                            "decoder2", "decoder1", "upsample", "edgeDetector"}
    # The release's init: offset heads start at zero (no offset, masks 0.5), the deformable bias too.
    assert not sd["feat_prop_module.deform_align.forward_.conv_offset.6.weight"].any()
    assert not sd["feat_prop_module.deform_align.backward_.bias"].any()


def test_a_plain_state_dict_loads_strictly(state, completer):
    assert isinstance(completer, ProPainterCompleter) and completer.dilation == 0
    loaded = completer.net.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert not completer.net.training


@pytest.mark.parametrize("case,needle", [
    ("none", "flow.completion=propainter needs flow.completion_weights"),
    ("missing", "does not exist"),
    ("garbage", "is not a readable torch state dict"),
    ("wrapped", "74 missing key(s), e.g. 'downsample.0.weight', 1 unexpected key(s), e.g. 'state_dict'"),
    ("dropped", "1 missing key(s), e.g. 'edgeDetector.out_layer.bias'"),
    ("reshaped", "1 wrongly shaped key(s), e.g. 'upsample.2.conv.weight'"),
])
def test_bad_weights_fail_in_one_line(state, tmp_path, case, needle):
    path = tmp_path / "w.pth"
    if case == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif case == "wrapped":
        torch.save({"state_dict": state}, path)
    elif case == "dropped":
        torch.save({k: v for k, v in state.items() if k != "edgeDetector.out_layer.bias"}, path)
    elif case == "reshaped":
        torch.save({**state, "upsample.2.conv.weight": torch.zeros(3, 32, 3, 3)}, path)
    with pytest.raises(ModelLoadError) as err:
        build_flow_completer("propainter", weights=None if case == "none" else str(path))
    message = str(err.value)
    assert needle in message and URL in message and "\n" not in message
    if case not in ("none",):
        assert repr(str(path)) in message  # names the file


def _lrelu(x, slope=0.2):
    return F.leaky_relu(x, slope)


def reference_forward(sd, masked, masks):
    """The release's forward written as plain functional calls on the state dict (layout [B, T, C, H, W] in/out)."""
    b, t, _, h, w = masked.shape
    x = torch.cat([masked, masks], 2).permute(0, 2, 1, 3, 4)  # Conv3d layout [B, C, T, H, W]
    x = F.conv3d(F.pad(x, (2, 2, 2, 2, 0, 0), mode="replicate"), sd["downsample.0.weight"], sd["downsample.0.bias"],
                 stride=(1, 2, 2))
    x = _lrelu(x)

    def p3d(x, name, stride):
        x = _lrelu(F.conv3d(x, sd[f"{name}.conv1.0.weight"], sd[f"{name}.conv1.0.bias"], stride=(1, stride, stride),
                            padding=(0, 1, 1)))
        return F.conv3d(x, sd[f"{name}.conv2.0.weight"], sd[f"{name}.conv2.0.bias"], padding=(2, 0, 0),
                        dilation=(2, 1, 1))

    e1 = _lrelu(p3d(_lrelu(p3d(x, "encoder1.0", 1)), "encoder1.2", 2))
    e2 = _lrelu(p3d(_lrelu(p3d(e1, "encoder2.0", 1)), "encoder2.2", 2))
    m = e2
    for i, d in ((0, 3), (2, 2), (4, 1)):
        m = _lrelu(F.conv3d(m, sd[f"mid_dilation.{i}.weight"], sd[f"mid_dilation.{i}.bias"], padding=(0, d, d),
                            dilation=(1, d, d)))
    spatial = [m[:, :, i] for i in range(t)]
    pre = "feat_prop_module."

    def conv(x, key, pad=1):
        return F.conv2d(x, sd[key + ".weight"], sd[key + ".bias"], padding=pad)

    def align(d, n1, cur, n2):
        c = torch.cat([n1, cur, n2], 1)
        for i in (0, 2, 4):
            c = _lrelu(conv(c, f"{pre}deform_align.{d}.conv_offset.{i}"), 0.1)
        o = conv(c, f"{pre}deform_align.{d}.conv_offset.6")  # 432 = 3 chunks of 16 groups x 9 taps
        offset, mask = 5 * torch.tanh(o[:, :288]), torch.sigmoid(o[:, 288:])
        return deform_conv2d(torch.cat([n1, n2], 1), offset, sd[f"{pre}deform_align.{d}.weight"],
                             sd[f"{pre}deform_align.{d}.bias"], padding=1, mask=mask)

    def backbone(d, x):
        return conv(_lrelu(conv(x, f"{pre}backbone.{d}.0"), 0.1), f"{pre}backbone.{d}.2")

    done = {}
    for d, order in (("backward_", list(range(t))[::-1]), ("forward_", list(range(t)))):
        hist, prop = [], torch.zeros_like(spatial[0])
        for i, idx in enumerate(order):
            if i > 0:
                n2 = hist[-2] if i > 1 else torch.zeros_like(prop)
                prop = align(d, prop, spatial[idx], n2)
            extra = [done["backward_"][idx]] if d == "forward_" else []
            prop = prop + backbone(d, torch.cat([spatial[idx], *extra, prop], 1))
            hist.append(prop)
        done[d] = dict(zip(order, hist, strict=True))
    fused = [conv(torch.cat([done["backward_"][i], done["forward_"][i]], 1), f"{pre}fusion", 0) + spatial[i]
             for i in range(t)]
    feat = torch.stack(fused, 1).reshape(b * t, 128, h // 8, w // 8)

    def up(x, key):
        return conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True), key)

    e1 = e1.permute(0, 2, 1, 3, 4).reshape(b * t, 64, h // 4, w // 4)
    d2 = _lrelu(up(_lrelu(conv(feat, "decoder2.0")), "decoder2.2.conv")) + e1
    d1 = _lrelu(up(_lrelu(conv(d2, "decoder1.0")), "decoder1.2.conv"))
    flow = up(_lrelu(conv(d1, "upsample.0")), "upsample.2.conv")
    return flow.reshape(b, t, 2, h, w)


def test_forward_matches_the_functional_reference(state, completer):
    g = torch.Generator().manual_seed(5)
    masked = 2 * torch.randn(2, 4, 2, 32, 64, generator=g)  # two clips: batch and time must not mix
    masks = (torch.rand(2, 4, 1, 32, 64, generator=g) > 0.7).float()
    masked = masked * (1 - masks)
    with torch.no_grad():
        ours = completer.net(masked, masks)
        ref = reference_forward(state, masked, masks)
    assert ours.shape == (2, 4, 2, 32, 64)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)  # the same kernels on the same tensors
    assert ref.abs().mean() > 1e-2  # a real signal, not zeros compared to zeros


def test_outside_the_holes_is_the_input_bit_for_bit(completer):
    fw, bw, masks = clip()
    fw[0, 0, 0, 0, :5] = -0.0  # a sum with a zero prediction would turn these into +0.0
    out_fw, out_bw = completer.complete_pair(fw, bw, masks)
    for out, given, hole in ((out_fw, fw, masks[:, :-1]), (out_bw, bw, masks[:, 1:])):
        keep = (hole == 0).expand_as(given)
        assert torch.equal(out[keep].view(torch.int32), given[keep].view(torch.int32))
        assert (out != given)[~keep].float().mean() > 0.99  # inside: the prediction


def test_combine_uses_the_source_frames_holes(completer):
    fw, bw, masks = clip()
    out_fw, out_bw = completer.complete_pair(fw, bw, masks)
    # The holes move, so masks[:, :-1] and masks[:, 1:] differ: each direction changes exactly its own.
    assert not torch.equal(masks[:, :-1], masks[:, 1:])
    assert torch.equal((out_fw != fw).any(2, keepdim=True), masks[:, :-1] > 0)
    assert torch.equal((out_bw != bw).any(2, keepdim=True), masks[:, 1:] > 0)


def test_values_inside_the_holes_are_never_seen(completer):
    fw, bw, masks = clip()
    out = completer.complete_pair(fw, bw, masks)
    g = torch.Generator().manual_seed(9)
    fw2 = torch.where(masks[:, :-1] > 0, 100 * torch.randn(fw.shape, generator=g), fw)
    bw2 = torch.where(masks[:, 1:] > 0, 100 * torch.randn(bw.shape, generator=g), bw)
    out2 = completer.complete_pair(fw2, bw2, masks)
    assert torch.equal(out[0], out2[0]) and torch.equal(out[1], out2[1])


def test_backward_flows_run_time_reversed(completer):
    fw, bw, masks = clip()
    out_fw, out_bw = completer.complete_pair(fw, bw, masks)
    net = completer.net
    hf, hb = masks[:, :-1], masks[:, 1:]
    with torch.no_grad():
        flipped = net((bw * (1 - hb)).flip(1), hb.flip(1)).flip(1)
        unflipped = net(bw * (1 - hb), hb)
        forward = net(fw * (1 - hf), hf)
    torch.testing.assert_close(out_bw, torch.where(hb > 0, flipped, bw), rtol=0, atol=1e-6)
    torch.testing.assert_close(out_fw, torch.where(hf > 0, forward, fw), rtol=0, atol=1e-6)
    # The network is not time-symmetric: without the flip the backward result would differ.
    assert (torch.where(hb > 0, unflipped, bw) - out_bw).abs().max() > 1e-2


def test_no_holes_returns_the_input(completer):
    fw, bw, _ = clip()
    out_fw, out_bw = completer.complete_pair(fw, bw, torch.zeros(1, 5, 1, 48, 64))
    assert torch.equal(out_fw, fw) and torch.equal(out_bw, bw)


def test_sizes_off_the_grid_of_8_are_replicate_padded_and_cropped(completer):
    fw, bw, masks = clip(4, 45, 61)
    out_fw, out_bw = completer.complete_pair(fw, bw, masks)
    hf = masks[:, :-1]
    x = torch.cat([fw * (1 - hf), hf], 2)[0]  # [T, 3, 45, 61]
    padded = F.pad(x, (0, 3, 0, 3), mode="replicate")[None]  # to 48x64
    with torch.no_grad():
        pred = completer.net(padded[:, :, :2], padded[:, :, 2:])[..., :45, :61]
    assert out_fw.shape == fw.shape and out_bw.shape == bw.shape
    torch.testing.assert_close(out_fw, torch.where(hf > 0, pred, fw), rtol=0, atol=1e-6)
    # At a multiple of 8 nothing is padded: the prediction is the network's own.
    fw8, _, masks8 = clip(4, 48, 64)
    with torch.no_grad():
        direct = completer.net(fw8 * (1 - masks8[:, :-1]), masks8[:, :-1])
    assert torch.equal(completer.net.complete(fw8, masks8[:, :-1]), direct)


def test_float16_flows_and_one_direction(completer):
    fw, bw, masks = clip()
    out_fw, _ = completer.complete_pair(fw.half(), bw.half(), masks)
    assert out_fw.dtype == torch.float16 and next(completer.net.parameters()).dtype == torch.float32
    assert torch.equal(completer.complete_flows(bw, masks, backward=True), completer.complete_pair(fw, bw, masks)[1])


def test_build_flow_fn_builds_it_from_the_flow_section(weights_file, state):
    cfg = OmegaConf.structured(FlowConfig(completion="propainter", completion_weights=str(weights_file)))
    _, completer = build_flow_fn(cfg, torch.device("cpu"))
    assert isinstance(completer, ProPainterCompleter)
    assert torch.equal(completer.net.state_dict()["upsample.2.conv.weight"], state["upsample.2.conv.weight"])
    with pytest.raises(ModelLoadError, match="flow.completion_weights"):
        build_flow_fn(OmegaConf.structured(FlowConfig(completion="propainter")), torch.device("cpu"))
    # Other completers take no weights: the key is ignored.
    _, smooth = build_flow_fn(OmegaConf.structured(FlowConfig(completion_weights="x")), torch.device("cpu"))
    assert not isinstance(smooth, ProPainterCompleter) and "propainter" in FLOW_COMPLETERS
    assert isinstance(load_propainter("random"), RecurrentFlowCompleteNet)


def test_config_checks_accept_it_and_name_missing_weights_early(weights_file, tmp_path):
    base = ["method=propagate", "flow.completion=propainter"]
    with pytest.raises(ConfigError) as err:
        load_config(InferenceConfig, None, base, check=check_inference_config)
    assert "flow.completion_weights" in str(err.value) and "\n" not in str(err.value)
    assert "(set by default)" in str(err.value)
    with pytest.raises(ConfigError, match=r"flow.completion_weights='/nope.pth' does not exist.*command line"):
        load_config(InferenceConfig, None, [*base, "flow.completion_weights=/nope.pth"], check=check_inference_config)
    load_config(InferenceConfig, None, [*base, f"flow.completion_weights={weights_file}"], check=check_inference_config)
    load_config(InferenceConfig, None, ["method=telea", "flow.completion=propainter"], check=check_inference_config)

    out = tmp_path / "run"
    train = [f"data.root={tmp_path}", f"checkpoint.output_dir={out}", "flow.completion=propainter"]
    with pytest.raises(ConfigError, match=r"^flow.completion=propainter needs flow.completion_weights"):
        load_config(TrainConfig, None, train, check=check_train_config)
    # With the file, the choice and weights pass: the next check (the dataset layout) speaks.
    with pytest.raises(ConfigError, match="JPEGImages"):
        load_config(TrainConfig, None, [*train, f"flow.completion_weights={weights_file}"], check=check_train_config)
    assert not out.exists()


def test_inference_cli_fails_before_writing_and_propagate_runs_with_it(weights_file, tmp_path, capsys):
    cli = load_script("inference")
    (tmp_path / "frames").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    texture = (rng.random((48, 80, 3)) * 255).astype(np.uint8)
    for i in range(3):
        cv2.imwrite(str(tmp_path / "frames" / f"{i:05d}.png"), np.roll(texture, 2 * i, axis=1))
        mask = np.zeros((48, 80), np.uint8)
        mask[16:32, 20 + 4 * i : 40 + 4 * i] = 255
        cv2.imwrite(str(tmp_path / "masks" / f"{i:05d}.png"), mask)
    args = ["--video", str(tmp_path / "frames"), "--mask", str(tmp_path / "masks"), "method=propagate",
            "flow.completion=propainter"]
    out = tmp_path / "out"
    assert cli.main([*args, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "flow.completion_weights" in err and len(err.splitlines()) == 1 and not out.exists()
    assert cli.main([*args, "--output", str(out), f"flow.completion_weights={weights_file}"]) == 0
    assert len(list(out.glob("**/*.png"))) >= 3
