"""DeformableNoiseAlignment: identity at init, trainability, flow-steered deformable sampling, cost."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fffvdi.errors import ConfigError, InputError
from fffvdi.flow.warp import flow_warp, in_bounds
from fffvdi.models.propagation import DeformableNoiseAlignment, FlowGuidedDeformAlign

B, F, C, H, W = 1, 4, 32, 12, 16


def _inputs(seed: int = 0, b: int = B, f: int = F, c: int = C, h: int = H, w: int = W):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, f, c, h, w, generator=g)
    masks = (torch.rand(b, f, 1, h, w, generator=g) > 0.6).float()
    flows_fw = 2 * torch.randn(b, f - 1, 2, h, w, generator=g)
    flows_bw = -flows_fw + 0.1 * torch.randn(b, f - 1, 2, h, w, generator=g)  # roughly consistent pair
    return feats, masks, flows_fw, flows_bw


def test_identity_at_init():
    torch.manual_seed(0)
    m = DeformableNoiseAlignment(channels=C, deform_groups=16)
    feats, masks, ff, fb = _inputs()
    out = m(feats, masks, ff, fb)
    assert out.shape == feats.shape
    assert torch.equal(out, feats)


def test_all_parameters_train_and_output_changes():
    torch.manual_seed(0)
    m = DeformableNoiseAlignment(channels=C, deform_groups=16)
    feats, masks, ff, fb = _inputs()
    target = torch.randn_like(feats)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        loss = (m(feats, masks, ff, fb) - target).pow(2).mean()
        loss.backward()
        return {n: p.grad.abs().sum().item() for n, p in m.named_parameters()}

    grads = step()
    # Only the zero-initialised last fusion conv can get a gradient while it is zero.
    assert grads["fusion.2.weight"] > 0 and grads["fusion.2.bias"] > 0
    assert all(g == 0 for n, g in grads.items() if not n.startswith("fusion.2."))
    opt.step()
    with torch.no_grad():
        assert not torch.allclose(m(feats, masks, ff, fb), feats)
    # The zero offset convs unlock the layers before them one step later.
    for _ in range(2):
        grads = step()
        opt.step()
    zero = [n for n, g in grads.items() if g == 0]
    assert not zero, f"parameters without gradient: {zero}"


def test_deformable_sampling_follows_flow():
    """Zero-init offsets + identity centre tap: aligned = 0.5 * flow_warp(neighbour, flow) (modulation 0.5)."""
    torch.manual_seed(0)
    hidden, groups = 32, 16
    align = FlowGuidedDeformAlign(hidden, groups, max_residue=3.0)
    with torch.no_grad():
        align.deform.weight.zero_()
        align.deform.weight[:, :, 1, 1] = torch.eye(hidden)
        align.deform.bias.zero_()
    g = torch.Generator().manual_seed(3)
    neighbour = torch.randn(2, hidden, H, W, generator=g)
    # Asymmetric, fractional, spatially varying flow: a swapped (x, y) order would not match.
    flow = torch.stack([2.3 + 0.5 * torch.rand(2, H, W, generator=g), -1.2 + 0.3 * torch.rand(2, H, W, generator=g)], 1)
    cond = torch.randn(2, 2 * hidden + 4, H, W, generator=g)
    out = align(neighbour, cond, flow)
    ref = 0.5 * flow_warp(neighbour, flow)
    inside = in_bounds(flow).expand_as(out)  # border handling differs (zero vs border padding)
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(out[inside], ref[inside], atol=1e-5, rtol=1e-5)
    # Wrong axis order would sample elsewhere.
    swapped = 0.5 * flow_warp(neighbour, flow.flip(1))
    assert (out[inside] - swapped[inside]).abs().max() > 0.1


def test_residue_is_bounded_by_max_residue():
    """With saturated deltas the offsets move by exactly max_residue from the flow."""
    hidden, groups = 16, 16
    align = FlowGuidedDeformAlign(hidden, groups, max_residue=1.0)
    taps = groups * 9
    with torch.no_grad():
        align.deform.weight.zero_()
        align.deform.weight[:, :, 1, 1] = torch.eye(hidden)
        align.deform.bias.zero_()
        last = align.offset_net[-1]
        last.bias[: 2 * taps] = torch.tensor([0.0, 100.0]).repeat(taps)  # (dy, dx) -> tanh = (0, 1)
    neighbour = torch.randn(1, hidden, H, W)
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0] = 1.0  # x + 1, residue adds another x + 1
    out = align(neighbour, torch.zeros(1, 2 * hidden + 4, H, W), flow)
    torch.testing.assert_close(out[..., : W - 2], 0.5 * neighbour[..., 2:], atol=1e-5, rtol=1e-5)


def test_flows_and_masks_steer_the_output(randomise_dna):
    torch.manual_seed(0)
    m = DeformableNoiseAlignment(channels=C, deform_groups=16)
    randomise_dna(m)
    feats, masks, ff, fb = _inputs()
    with torch.no_grad():
        base = m(feats, masks, ff, fb)
        assert not torch.allclose(m(feats, masks, ff + 1.5, fb - 1.5), base)
        assert not torch.allclose(m(feats, 1 - masks, ff, fb), base)
        # Bidirectional: frame 0 depends on the last frame, the last frame on frame 0.
        later = feats.clone()
        later[:, -1] += 1.0
        assert not torch.allclose(m(later, masks, ff, fb)[:, 0], base[:, 0])
        earlier = feats.clone()
        earlier[:, 0] += 1.0
        assert not torch.allclose(m(earlier, masks, ff, fb)[:, -1], base[:, -1])


def test_single_frame_and_checkpointing(randomise_dna):
    torch.manual_seed(0)
    m = DeformableNoiseAlignment(channels=C, deform_groups=16)
    randomise_dna(m)
    feats, masks, ff, fb = _inputs(f=1)
    assert ff.shape[1] == 0 and m(feats, masks, ff, fb).shape == feats.shape
    feats, masks, ff, fb = _inputs()
    feats.requires_grad_(True)
    out = m(feats, masks, ff, fb)
    (g_plain,) = torch.autograd.grad(out.square().sum(), feats)
    m.gradient_checkpointing = True
    out_ckpt = m(feats, masks, ff, fb)
    (g_ckpt,) = torch.autograd.grad(out_ckpt.square().sum(), feats)
    torch.testing.assert_close(out_ckpt, out)
    torch.testing.assert_close(g_ckpt, g_plain)


def test_bad_configs_and_inputs():
    with pytest.raises(ConfigError, match="deform_groups=16 must divide"):
        DeformableNoiseAlignment(channels=40, hidden=40, deform_groups=16)
    m = DeformableNoiseAlignment(channels=C)
    feats, masks, ff, fb = _inputs()
    with pytest.raises(InputError, match="masks"):
        m(feats, masks[:, :-1], ff, fb)
    with pytest.raises(InputError, match="flows_bw"):
        m(feats, masks, ff, fb[..., :-1])
    with pytest.raises(InputError, match="feats"):
        m(feats[:, :, :8], masks, ff, fb)


def test_cost_at_svd_width():
    """At 320 channels: a few M parameters, under 10 % of an SVD UNet step in FLOPs."""
    m = DeformableNoiseAlignment(channels=320)
    assert m.config == dict(channels=320, hidden=128, deform_groups=16, max_residue=3.0,
                            arch="light", identity_init=True, flow_units="cells", residual=True)
    n_params = sum(p.numel() for p in m.parameters())
    assert 1e6 < n_params < 0.01 * 1.5e9
    f, h, w = 3, 4, 4
    feats, masks, ff, fb = _inputs(f=f, c=320, h=h, w=w)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        assert m(feats, masks, ff, fb).shape == feats.shape
    hidden = m.config["hidden"]
    deform = 2 * hidden * hidden * 9 * 2 * (f - 1)  # deform_conv2d is not counted: 2 directions, F-1 steps
    per_pixel = (counter.get_total_flops() + deform * h * w) / (f * h * w)
    # SVD-XT UNet: about 279.5 MFLOP per latent pixel and frame (FlopCounterMode, 25 x 72 x 128 latents).
    assert per_pixel < 0.10 * 279.5e6


def test_half_precision_and_autocast_run(randomise_dna):
    """bfloat16 weights and CPU autocast both work (deform_conv2d has no bf16 kernel; it runs in float32)."""
    torch.manual_seed(0)
    dna = DeformableNoiseAlignment(channels=32, hidden=16, deform_groups=4)
    randomise_dna(dna)
    feats, masks = torch.randn(1, 3, 32, 6, 6), (torch.rand(1, 3, 1, 6, 6) > 0.5).float()
    fw, bw = torch.randn(1, 2, 2, 6, 6), torch.randn(1, 2, 2, 6, 6)
    ref = dna(feats, masks, fw, bw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = dna(feats, masks, fw, bw)
    half = dna.to(torch.bfloat16)(feats.bfloat16(), masks.bfloat16(), fw, bw)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(auto.float(), ref, atol=0.1, rtol=0.05)
    assert torch.allclose(half.float(), ref, atol=0.1, rtol=0.05)


def test_passes_read_neighbours_along_the_right_flows(monkeypatch):
    """Backward pass at t aligns the output of t+1 along flows_fw[:, t]; forward pass at t the output of t-1
    along flows_bw[:, t-1]. Flows here are unrelated to each other, so a swap cannot pass."""
    hidden = 16
    dna = DeformableNoiseAlignment(channels=C, hidden=hidden, deform_groups=4)
    feats, masks, fw, _ = _inputs(5)
    bw = 3 * torch.randn(fw.shape, generator=torch.Generator().manual_seed(9))
    aligned = {"bwd": [], "fwd": []}
    outputs = {"bwd": [], "fwd": []}
    for d in ("bwd", "fwd"):
        align = dna.align[d]
        monkeypatch.setattr(align, "forward", lambda nb, cond, flow, d=d, f=align.forward: aligned[d].append(
            (nb.detach().clone(), cond.detach().clone(), flow.detach().clone())) or f(nb, cond, flow))
    step = dna._step  # each recurrent step's output, whatever the arch's refinement rule
    monkeypatch.setattr(dna, "_step", lambda d, *a: outputs[d].append(step(d, *a)) or outputs[d][-1])
    with torch.no_grad():
        dna(feats, masks, fw, bw)
    order = {"bwd": list(range(F - 1, -1, -1)), "fwd": list(range(F))}
    out_at = {d: dict(zip(order[d], outputs[d])) for d in order}
    for d, flows, nb_of in (("bwd", fw, lambda t: (t + 1, t)), ("fwd", bw, lambda t: (t - 1, t - 1))):
        assert len(aligned[d]) == F - 1
        for (nb, cond, flow), t in zip(aligned[d], order[d][1:]):
            src, k = nb_of(t)
            torch.testing.assert_close(flow, flows[:, k])
            torch.testing.assert_close(nb, out_at[d][src])
            torch.testing.assert_close(cond[:, hidden : 2 * hidden], flow_warp(nb, flows[:, k]))


def test_official_architecture_matches_the_authors_parameter_count_and_init_options():
    official = DeformableNoiseAlignment(channels=320, arch="official")
    assert sum(p.numel() for p in official.parameters()) == 20_035_744  # the authors' noise_refiner at 320 channels
    assert sum(p.numel() for p in DeformableNoiseAlignment(channels=320).parameters()) == 4_107_296  # light
    small = dict(channels=C, arch="official", deform_groups=4)
    feats, masks, fw, bw = _inputs(7)
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.equal(DeformableNoiseAlignment(**small)(feats, masks, fw, bw), feats)  # identity_init default
        torch.manual_seed(0)
        random = DeformableNoiseAlignment(**small, identity_init=False)(feats, masks, fw, bw)
    change = ((random - feats).norm() / feats.norm()).item()
    assert 0 < change < 1  # starts as a perturbation of the input, like the official module
    with pytest.raises(ConfigError, match="arch"):
        DeformableNoiseAlignment(channels=C, arch="heavy")
    with pytest.raises(ConfigError, match="hidden"):
        DeformableNoiseAlignment(channels=C, hidden=16, arch="official")


def test_fresh_module_follows_the_propagation_config_and_saved_modules_keep_theirs(tiny_svd_dir, tmp_path):
    from fffvdi.models.loading import load_svd_components

    comps = load_svd_components(str(tiny_svd_dir), propagation=dict(arch="official", identity_init=False))
    prop = comps.unet.propagation
    assert prop.config["arch"] == "official" and not prop.config["identity_init"]
    assert isinstance(prop.proj_in, torch.nn.Identity) and len(prop.align["bwd"].offset_net) == 7  # 4 convs
    comps.unet.save_pretrained(tmp_path / "ckpt")
    again = load_svd_components(str(tiny_svd_dir), checkpoint=str(tmp_path / "ckpt"), propagation=dict(arch="light"))
    assert again.unet.propagation.config == prop.config  # the saved module wins over the config
