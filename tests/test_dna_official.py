"""`arch: official` computes the FFF-VDI release's noise_refiner (Hydragon516/FFF-VDI bf47e75), checked against a
reference written here from the release's facts with functional ops only, and on hand-checkable cases."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from fffvdi.flow.resize import release_latent_inputs, resize_flows_and_masks
from fffvdi.flow.warp import fb_consistency
from fffvdi.models.propagation import DeformableNoiseAlignment

C, GROUPS = 16, 4


def _inputs(seed: int, f: int = 4, h: int = 10, w: int = 12):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(1, f, C, h, w, generator=g)
    masks = (torch.rand(1, f, 1, h, w, generator=g) > 0.6).float()
    fw = 3 * torch.randn(1, f - 1, 2, h, w, generator=g)  # large enough to leave the frame at the borders
    bw = -fw + 0.3 * torch.randn(1, f - 1, 2, h, w, generator=g)  # a roughly consistent pair: the fb check splits
    return feats, masks, fw, bw


def _official(seed: int = 0) -> DeformableNoiseAlignment:
    """A randomly initialised official module whose every weight (offset nets included) is non-zero."""
    torch.manual_seed(seed)
    m = DeformableNoiseAlignment(C, arch="official", deform_groups=GROUPS, identity_init=False)
    with torch.no_grad():  # the zero-initialised convs would hide the offsets and the deform bias
        for name, p in m.named_parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn_like(p))
    return m


# --- the release's forward, from its facts -----------------------------------------------------------------------
def _block(x, sd, pre, slope):
    """conv3x3 -> leaky ReLU(slope) -> conv3x3 (the release's backbone and fuse)."""
    y = F.leaky_relu(F.conv2d(x, sd[pre + "0.weight"], sd[pre + "0.bias"], padding=1), slope)
    return F.conv2d(y, sd[pre + "2.weight"], sd[pre + "2.bias"], padding=1)


def _warp(x, flow):
    """grid_sample at p + flow(p), zero padding, align_corners=True (the release's flow_warp)."""
    _, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    gx = 2 * (xs + flow[:, 0]) / max(w - 1, 1) - 1
    gy = 2 * (ys + flow[:, 1]) / max(h - 1, 1) - 1
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=True)


def _valid(f, b):
    """|f + warp(b, f)|^2 < 0.01 (|f|^2 + |warp(b, f)|^2) + 0.5, nothing else."""
    back = _warp(b, f)
    sq = lambda v: v.pow(2).sum(1, keepdim=True)  # noqa: E731
    return (sq(f + back) < 0.01 * (sq(f) + sq(back)) + 0.5).float()


def _align(x, cond, flow, sd, pre):
    """4-conv offset net (leaky 0.1), offsets 3 tanh(o1, o2) + flow (y, x) on every tap, sigmoid modulation."""
    y = cond
    for i in (0, 2, 4):
        y = F.leaky_relu(F.conv2d(y, sd[f"{pre}offset_net.{i}.weight"], sd[f"{pre}offset_net.{i}.bias"], padding=1), 0.1)
    y = F.conv2d(y, sd[f"{pre}offset_net.6.weight"], sd[f"{pre}offset_net.6.bias"], padding=1)
    o1, o2, m = torch.chunk(y, 3, dim=1)
    offset = 3.0 * torch.tanh(torch.cat([o1, o2], 1))
    offset = offset + flow.flip(1).repeat(1, offset.shape[1] // 2, 1, 1)
    return deform_conv2d(x, offset, sd[pre + "deform.weight"], sd[pre + "deform.bias"], padding=1, mask=torch.sigmoid(m))


def release_forward(sd, x, masks, fw, bw):
    """The release's BidirectionalPropagation (learnable) on `x [B, T, C, h, w]`: backward then forward pass, fuse."""
    t = x.shape[1]
    outs = {}
    for name, order, flows, checks, source in (("bwd", range(t - 1, -1, -1), fw, bw, None),
                                               ("fwd", range(t), bw, fw, "bwd")):
        feats = [None] * t
        prop = None
        for i, idx in enumerate(order):
            cur = x[:, idx] if source is None else outs[source][idx]
            mask = masks[:, idx]
            if i == 0:
                prop = cur
            else:
                k = idx if name == "bwd" else idx - 1
                flow, check = flows[:, k], checks[:, k]
                cond = torch.cat([cur, _warp(prop, flow), flow, _valid(flow, check), mask], 1)
                prop = _align(prop, cond, flow, sd, f"align.{name}.")
            prop = prop + _block(torch.cat([cur, prop, mask], 1), sd, f"backbone.{name}.", 0.2)
            feats[idx] = prop
        outs[name] = feats
    fused = [_block(torch.cat([outs["bwd"][i], outs["fwd"][i], masks[:, i]], 1), sd, "fusion.", 0.2) for i in range(t)]
    return torch.stack(fused, 1) + x


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_official_module_equals_the_release_forward(frames):
    m = _official()
    feats, masks, fw, bw = _inputs(frames, f=frames)
    with torch.no_grad():
        ours = m(feats, masks, fw, bw)
        ref = release_forward(m.state_dict(), feats, masks, fw, bw)
    assert (ours - feats).abs().max() > 0.1  # the module changes its input: the comparison is not vacuous
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rule, value", [("residual", False), ("start_from_current", False), ("padding", "border"),
                                         ("fb_in_bounds", True)])
def test_each_release_rule_changes_the_output(rule, value):
    """Switching any one rule back to light's makes the module leave the release (so each is really exercised)."""
    m = _official()
    feats, masks, fw, bw = _inputs(3)
    fw[..., -2:] = 0.6  # the last columns move out of the frame by less than a pixel: only the bounds test rejects them
    bw[..., -2:] = -0.6
    with torch.no_grad():
        for d in ("bwd", "fwd"):  # let the fb validity channel of the condition weigh on the offsets
            m.align[d].offset_net[0].weight[:, 2 * C + 2] = 1.0
        ref = release_forward(m.state_dict(), feats, masks, fw, bw)
        m.rules = dataclasses.replace(m.rules, **{rule: value})
        assert (m(feats, masks, fw, bw) - ref).abs().max() > 1e-3


def test_one_frame_clip_by_hand():
    """F = 1: b = x + bb_b([x, x, m]); f = b + bb_f([b, b, m]); out = x + fuse([b, f, m]), slope 0.2 everywhere."""
    m = _official(1)
    sd = m.state_dict()
    feats, masks, fw, bw = _inputs(3, f=1)
    x, mask = feats[:, 0], masks[:, 0]
    b = x + _block(torch.cat([x, x, mask], 1), sd, "backbone.bwd.", 0.2)
    f = b + _block(torch.cat([b, b, mask], 1), sd, "backbone.fwd.", 0.2)
    expected = x + _block(torch.cat([b, f, mask], 1), sd, "fusion.", 0.2)
    with torch.no_grad():
        torch.testing.assert_close(m(feats, masks, fw, bw)[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_first_frame_of_a_pass_starts_from_its_own_feature():
    """With both backbones' last conv at zero, each step returns what it aligned: the first frame of the backward
    pass (the last frame) is then its own input, not zeros; the light rules give zeros there."""
    feats, masks, fw, bw = _inputs(4, f=3)
    for arch, expect_input in (("official", True), ("light", False)):
        m = DeformableNoiseAlignment(C, hidden=C, arch=arch, deform_groups=GROUPS, identity_init=False)
        seen = []
        m.fusion.register_forward_hook(lambda mod, args, out, seen=seen: seen.append(args[0]))
        with torch.no_grad():
            for d in ("bwd", "fwd"):
                m.backbone[d][2].weight.zero_()
                m.backbone[d][2].bias.zero_()
            m(feats, masks, fw, bw)
        fused_in = seen[0].unflatten(0, (1, 3))  # [B, F, 2C + 1, h, w]: backward outputs, forward outputs, mask
        last_backward = fused_in[:, 2, :C]
        if expect_input:
            torch.testing.assert_close(last_backward, feats[:, 2])
        else:
            assert not last_backward.any()


def test_identity_flows_keep_features_in_place():
    """Zero flows: every fb check passes, the warp is the identity, offsets are the learned residue alone."""
    m = _official(2)
    feats, masks, fw, _ = _inputs(5, f=3)
    zero = torch.zeros_like(fw)
    assert fb_consistency(zero[:, 0], zero[:, 0], padding_mode="zeros", require_in_bounds=False).all()
    with torch.no_grad():
        torch.testing.assert_close(m(feats, masks, zero, zero), release_forward(m.state_dict(), feats, masks, zero, zero),
                                   atol=1e-5, rtol=1e-5)


def test_release_fb_check_has_no_bounds_test_and_samples_zeros():
    """A pixel in the last column moving +0.5 px lands outside: the light check rejects it, the release's accepts it
    (zero padding halves the sampled backward flow: |0.5 - 0.25|^2 = 0.0625 < 0.01 (0.25 + 0.0625) + 0.5)."""
    f = torch.zeros(1, 2, 4, 4)
    f[:, 0] = 0.5
    b = -f
    light = fb_consistency(f, b)
    release = fb_consistency(f, b, padding_mode="zeros", require_in_bounds=False)
    assert not light[0, 0, :, -1].any() and light[0, 0, :, :-1].all()
    assert release.all()


def test_official_init_zeroes_the_deform_bias_and_the_last_offset_conv():
    m = DeformableNoiseAlignment(C, arch="official", deform_groups=GROUPS)
    for d in ("bwd", "fwd"):
        assert not m.align[d].deform.bias.any() and m.align[d].deform.weight.any()
        assert not m.align[d].offset_net[6].weight.any() and not m.align[d].offset_net[6].bias.any()
    light = DeformableNoiseAlignment(C, arch="light", deform_groups=GROUPS)
    assert light.align["bwd"].deform.bias.any()  # light keeps torchvision's init
    slopes = {n: mod.negative_slope for n, mod in m.named_modules() if isinstance(mod, torch.nn.LeakyReLU)}
    assert {n: s for n, s in slopes.items() if n.startswith(("backbone", "fusion"))} == {
        "backbone.bwd.1": 0.2, "backbone.fwd.1": 0.2, "fusion.1": 0.2}
    assert {s for n, s in slopes.items() if "offset_net" in n} == {0.1}


def test_release_latent_inputs_keep_pixel_units_and_sample_top_left():
    """8x downsampling: flows stay in pixels (a 16 px motion stays 16, cells would give 2) and a mask cell takes
    its top-left pixel (cells: its centre)."""
    flows = torch.full((1, 1, 2, 32, 32), 16.0)
    masks = torch.zeros(1, 1, 1, 32, 32)
    masks[..., 0::8, 0::8] = 1  # only each cell's top-left pixel is a hole
    fl, mk = release_latent_inputs(flows, masks, (4, 4))
    assert torch.equal(fl, torch.full((1, 1, 2, 4, 4), 16.0)) and mk.all()
    fl_c, mk_c = resize_flows_and_masks(flows, masks, (4, 4))
    torch.testing.assert_close(fl_c, torch.full((1, 1, 2, 4, 4), 2.0))
    assert not mk_c.any()
    ramp = torch.arange(32.0).view(1, 1, 1, 1, 32).expand(1, 1, 2, 32, 32)
    fl_r, _ = release_latent_inputs(ramp, None, (4, 4))
    torch.testing.assert_close(fl_r[0, 0, 0, 0], torch.tensor([3.5, 11.5, 19.5, 27.5]))  # plain bilinear, no antialias


def test_light_refines_residually_and_old_saved_modules_keep_their_rule(tmp_path):
    """light adopted the release's residual refinement; a module saved before the rule was stored (no `residual` in
    its propagation_config.json) still replaces, as it was trained."""
    import json

    from safetensors.torch import save_file

    from fffvdi.models.unet import _load_propagation

    m = DeformableNoiseAlignment(C, hidden=C, deform_groups=GROUPS, identity_init=False)
    assert m.rules.residual and m.config["residual"]
    old = {k: v for k, v in m.config.items() if k != "residual"}
    (tmp_path / "cfg.json").write_text(json.dumps(old))
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.safetensors"))
    unet = torch.nn.Linear(1, 1)  # stands in for the UNet: only its device and dtype are read
    unet.device, unet.dtype = torch.device("cpu"), torch.float32
    loaded = _load_propagation(tmp_path / "w.safetensors", tmp_path / "cfg.json", unet=unet)
    assert loaded.rules.residual is False and loaded.config["residual"] is False
    feats, masks, fw, bw = _inputs(6, f=3)
    with torch.no_grad():
        assert (loaded(feats, masks, fw, bw) - m(feats, masks, fw, bw)).abs().max() > 1e-3  # the rule matters
