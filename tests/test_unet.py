"""FFFVDIUNet: hook-based propagation after conv_in, identity at init, save/load round trips."""
import copy
import logging

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from fffvdi.errors import InputError, ModelLoadError
from fffvdi.models.tiny import TINY_UNET_CONFIG
from fffvdi.models.unet import PROPAGATION_CONFIG, PROPAGATION_WEIGHTS, FFFVDIUNet

B, F, H, W = 1, 4, 16, 16


def _tiny_unet(seed: int = 0) -> UNetSpatioTemporalConditionModel:
    torch.manual_seed(seed)
    return UNetSpatioTemporalConditionModel(**{**TINY_UNET_CONFIG, "num_frames": F})


def _inputs(b: int = B, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(b, F, 8, H, W, generator=g)
    timestep = torch.full((b,), 0.4)
    ehs = torch.randn(b, 1, TINY_UNET_CONFIG["cross_attention_dim"], generator=g)
    time_ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(b, 1)
    masks = (torch.rand(b, F, 1, H, W, generator=g) > 0.5).float()
    flows_fw = 1.5 * torch.randn(b, F - 1, 2, H, W, generator=g)
    flows_bw = -flows_fw
    return (sample, timestep, ehs, time_ids), (masks, flows_fw, flows_bw)


@pytest.fixture
def model_and_plain():
    unet = _tiny_unet()
    plain = copy.deepcopy(unet)  # an unhooked copy with identical weights
    return FFFVDIUNet(unet), plain


def test_identity_at_init_and_shapes(model_and_plain):
    model, plain = model_and_plain
    args, cond = _inputs()
    with torch.no_grad():
        ref = plain(*args).sample
        out = model(*args, *cond)
        no_prop = model(*args)
    assert out.shape == (B, F, 4, H, W)
    assert torch.equal(out, ref)
    assert torch.equal(no_prop, ref)
    assert model.config.in_channels == 8 and model.dtype == torch.float32 and model.device.type == "cpu"
    assert model.propagation.config["channels"] == TINY_UNET_CONFIG["block_out_channels"][0]


def test_propagation_changes_output_and_can_be_disabled(model_and_plain, randomise_dna):
    model, plain = model_and_plain
    randomise_dna(model.propagation)
    args, cond = _inputs()
    with torch.no_grad():
        ref = plain(*args).sample
        out = model(*args, *cond)
        assert not torch.allclose(out, ref)
        assert torch.equal(model(*args), ref)  # masks/flows None: plain SVD, and no stale context
        model.set_propagation_enabled(False)
        assert torch.equal(model(*args, *cond), ref)
        model.set_propagation_enabled(True)
        assert torch.equal(model(*args, *cond), out)
        # Return conventions for drop-in use by diffusers pipelines.
        assert torch.equal(model(*args, *cond, return_dict=False)[0], out)
        assert torch.equal(model(*args, *cond, return_dict=True).sample, out)


def test_hook_sees_conv_in_features_of_all_frames(model_and_plain):
    model, _ = model_and_plain
    seen = {}
    original = model.propagation.forward

    def spy(feats, masks, flows_fw, flows_bw):
        seen["shape"] = tuple(feats.shape)
        return original(feats, masks, flows_fw, flows_bw)

    model.propagation.forward = spy
    args, cond = _inputs(b=2)
    with torch.no_grad():
        model(*args, *cond)
    assert seen["shape"] == (2, F, TINY_UNET_CONFIG["block_out_channels"][0], H, W)


def test_forward_backward_trains_both_parts(model_and_plain, randomise_dna):
    model, _ = model_and_plain
    randomise_dna(model.propagation)
    args, cond = _inputs()
    out = model(*args, *cond)
    out.square().mean().backward()
    assert model.propagation.fusion[-1].weight.grad.abs().sum() > 0
    assert model.propagation.proj_in.weight.grad.abs().sum() > 0
    assert model.unet.conv_out.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_same_grads(model_and_plain, randomise_dna):
    model, _ = model_and_plain
    randomise_dna(model.propagation)
    model.train()
    args, cond = _inputs()

    def grads():
        model.zero_grad()
        model(*args, *cond).square().mean().backward()
        return [p.grad.clone() for p in model.propagation.parameters()]

    plain_grads = grads()
    temporal = [m for n, m in model.named_modules() if n.endswith("temporal_transformer_blocks.0")]
    calls = []
    # counted on a submodule: the recomputation calls the block's forward, whose submodules run their hooks
    hooks = [m.attn1.register_forward_pre_hook(lambda mod, args: calls.append(1)) for m in temporal]
    grads()
    plain_calls, calls[:] = len(calls), []
    model.enable_gradient_checkpointing()
    assert model.propagation.gradient_checkpointing and model.unet.is_gradient_checkpointing
    for a, b in zip(grads(), plain_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # The temporal transformer blocks (diffusers leaves them out) run again in backward: their activations
    # were not kept.
    assert temporal and plain_calls == len(temporal) and len(calls) == 2 * len(temporal)
    model.disable_gradient_checkpointing()
    calls[:] = []
    grads()
    assert len(calls) == len(temporal)
    for h in hooks:
        h.remove()


def test_cfg_batch_broadcast(model_and_plain, randomise_dna):
    model, _ = model_and_plain
    randomise_dna(model.propagation)
    args, (masks, ff, fb) = _inputs(b=2)
    with torch.no_grad():
        one = model(*args, masks[:1], ff[:1], fb[:1])
        both = model(*args, masks[:1].repeat(2, 1, 1, 1, 1), ff[:1].repeat(2, 1, 1, 1, 1), fb[:1].repeat(2, 1, 1, 1, 1))
    assert torch.equal(one, both)


def test_bad_inputs_raise(model_and_plain):
    model, _ = model_and_plain
    args, (masks, ff, fb) = _inputs()
    with pytest.raises(InputError, match="together"):
        model(*args, masks, None, None)
    with pytest.raises(InputError, match="masks"):
        model(*args, masks[:, :, :, :8], ff, fb)
    with pytest.raises(InputError, match="flows_fw"):
        model(*args, masks, ff[:, :2], fb)
    sample, timestep, ehs, _ = args
    with pytest.raises(RuntimeError):  # fails inside the UNet, after the context was set
        model(sample, timestep, ehs, torch.zeros(B, 5), masks, ff, fb)
    assert model._context is None  # no stale masks/flows leak into the next call


def test_save_load_round_trip(tmp_path, model_and_plain, randomise_dna):
    model, plain = model_and_plain
    randomise_dna(model.propagation)
    model.save_pretrained(tmp_path / "ckpt")
    for name in ("config.json", "diffusion_pytorch_model.safetensors", PROPAGATION_WEIGHTS, PROPAGATION_CONFIG):
        assert (tmp_path / "ckpt" / name).is_file()
    loaded = FFFVDIUNet.from_pretrained(tmp_path / "ckpt")
    ref_state, new_state = model.state_dict(), loaded.state_dict()
    assert ref_state.keys() == new_state.keys()
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    base = plain.state_dict()
    assert all(torch.equal(base[k], v) for k, v in loaded.unet.state_dict().items())
    args, cond = _inputs()
    with torch.no_grad():
        # Equal weights; outputs agree to float rounding (BLAS paths differ with buffer alignment).
        torch.testing.assert_close(loaded(*args, *cond), model(*args, *cond), atol=1e-5, rtol=1e-5)
    half = FFFVDIUNet.from_pretrained(tmp_path / "ckpt", torch_dtype=torch.float16)
    assert half.dtype == torch.float16 and next(half.propagation.parameters()).dtype == torch.float16


def test_plain_unet_folder_gives_identity_module(tmp_path, caplog):
    plain = _tiny_unet()
    plain.save_pretrained(tmp_path / "unet")
    with caplog.at_level(logging.WARNING, logger="fffvdi.models.unet"):
        model = FFFVDIUNet.from_pretrained(tmp_path / "unet")
    assert "fresh identity" in caplog.text
    args, cond = _inputs()
    with torch.no_grad():
        out = model(*args, *cond)
        assert torch.equal(out, model(*args))  # propagation is an exact identity
        torch.testing.assert_close(out, plain(*args).sample, atol=1e-5, rtol=1e-5)


def test_svd_root_with_subfolder(tmp_path, tiny_svd_dir, randomise_dna):
    model = FFFVDIUNet.from_pretrained(tiny_svd_dir, subfolder="unet")
    assert model.config.in_channels == 8 and not (tiny_svd_dir / "unet" / PROPAGATION_WEIGHTS).exists()
    # A fine-tuned model saved into an SVD-style root loads its propagation module back.
    randomise_dna(model.propagation)
    model.save_pretrained(tmp_path / "root" / "unet")
    loaded = FFFVDIUNet.from_pretrained(tmp_path / "root", subfolder="unet")
    assert torch.equal(loaded.propagation.fusion[-1].weight, model.propagation.fusion[-1].weight)


def test_missing_folder_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load the SVD UNet"):
        FFFVDIUNet.from_pretrained(tmp_path / "nowhere")
