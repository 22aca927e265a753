"""Issue #24's code paths, checked on the CPU: no host sync in the propagation module's recurrence or in a sampler step,
the flow work hoisted out of the frame loop (same outputs as the per-step original), both CFG halves in one batch,
and `memory.compile` (compiled == eager within tolerance on the tiny model). Speed itself is measured by
scripts/gpu_check.py on a GPU, never by a timed test."""
import numpy as np
import pytest
import torch
from einops import rearrange
from torch.utils._python_dispatch import TorchDispatchMode

from fffvdi.bench import presets
from fffvdi.bench.measure import HostSyncCounter
from fffvdi.config import load_config, save_config
from fffvdi.diffusion import samplers
from fffvdi.diffusion.conditioning import Conditioning
from fffvdi.diffusion.edm import EDMDenoiser
from fffvdi.diffusion.samplers import CFGDenoiser, guidance_scales
from fffvdi.errors import ConfigError
from fffvdi.flow import warp
from fffvdi.flow.warp import fb_consistency, flow_warp
from fffvdi.inpaint.checks import check_inference_config
from fffvdi.inpaint.config import InferenceConfig
from fffvdi.inpaint.pipeline import FFFVDIPipeline
from fffvdi.models.propagation import DeformableNoiseAlignment

C, F_, H, W = 32, 5, 8, 12  # conv_in channels, frames, latent size
CPU = torch.device("cpu")


def module_inputs(b: int = 2, seed: int = 2):
    """feats, masks, flows_fw, flows_bw `[B, F, ...]` with large flows (some land outside, some fail the fb check)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, F_, C, H, W, generator=g)
    masks = (torch.rand(b, F_, 1, H, W, generator=g) > 0.5).float()
    flows_fw, flows_bw = (3 * torch.randn(b, F_ - 1, 2, H, W, generator=g) for _ in range(2))
    return feats, masks, flows_fw, flows_bw


def dna(arch: str, randomise) -> DeformableNoiseAlignment:
    """A small module of `arch` whose zero-initialised convs are random (a real function of its inputs)."""
    torch.manual_seed(1)
    m = DeformableNoiseAlignment(C, hidden=None if arch == "official" else 16, deform_groups=4, arch=arch).eval()
    randomise(m)
    return m


def per_step_reference(m: DeformableNoiseAlignment, feats, masks, flows_fw, flows_bw) -> torch.Tensor:
    """The recurrence as written before #24: warp grid, fb check and casts rebuilt at every frame step."""
    rules, (b, f) = m.rules, feats.shape[:2]
    masks, flows_fw, flows_bw = masks.to(feats.dtype), flows_fw.float(), flows_bw.float()
    cur = rearrange(m.proj_in(rearrange(feats, "b f c h w -> (b f) c h w")), "(b f) c h w -> b f c h w", b=b)

    def step(d, current, mask, nb, flow, back):
        if nb is None:
            aligned = current if rules.start_from_current else torch.zeros_like(current)
        else:
            valid = fb_consistency(flow, back, padding_mode=rules.padding, require_in_bounds=rules.fb_in_bounds)
            cond = torch.cat([current, flow_warp(nb, flow, padding_mode=rules.padding), flow.to(current.dtype),
                              valid.to(current.dtype), mask], dim=1)
            aligned = m.align[d](nb, cond, flow.to(current.dtype))
        refined = m.backbone[d](torch.cat([current, aligned, mask], dim=1))
        return aligned + refined if rules.residual else refined

    bwd = [None] * f
    for t in range(f - 1, -1, -1):
        last = t == f - 1
        bwd[t] = step("bwd", cur[:, t], masks[:, t], None if last else bwd[t + 1], None if last else flows_fw[:, t],
                      None if last else flows_bw[:, t])
    fwd = []
    for t in range(f):
        fwd.append(step("fwd", bwd[t], masks[:, t], fwd[t - 1] if t else None, flows_bw[:, t - 1] if t else None,
                        flows_fw[:, t - 1] if t else None))
    fused = torch.cat([torch.stack(bwd, 1), torch.stack(fwd, 1), masks], dim=2)
    return feats + rearrange(m.fusion(rearrange(fused, "b f c h w -> (b f) c h w")), "(b f) c h w -> b f c h w", b=b)


@pytest.mark.parametrize("arch", ["light", "official"])
def test_hoisted_flow_work_gives_the_per_step_original_bit_for_bit(arch, randomise_dna):
    m = dna(arch, randomise_dna)
    inputs = module_inputs()
    with torch.no_grad():
        assert torch.equal(m(*inputs), per_step_reference(m, *inputs))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: the passes' dtypes differ by arch
            assert torch.equal(m(*inputs), per_step_reference(m, *inputs))
        one = module_inputs(b=1)
        assert torch.equal(m(*one), per_step_reference(m, *one))
        feats, masks, fw, bw = module_inputs()
        single = (feats[:, :1], masks[:, :1], fw[:, :0], bw[:, :0])  # one frame: no pair to align
        assert torch.equal(m(*single), per_step_reference(m, *single))


@pytest.mark.parametrize("arch", ["light", "official"])
def test_module_forward_over_five_frames_makes_no_host_sync(arch, randomise_dna, monkeypatch):
    m = dna(arch, randomise_dna)
    inputs = module_inputs()
    with torch.no_grad():
        m(*inputs)  # the first call builds the cached base grid
        with HostSyncCounter() as syncs:
            m(*inputs)
    assert syncs.calls == []
    # The counter sees a value read back in a step, the way a GPU would stall on it.
    step = m._step

    def reads_a_value(direction, current, mask, neighbour, guide):
        if neighbour is not None:
            current.abs().max().item()
        return step(direction, current, mask, neighbour, guide)

    monkeypatch.setattr(m, "_step", reads_a_value)
    with torch.no_grad(), HostSyncCounter() as syncs:
        m(*inputs)
    assert syncs.calls == ["_local_scalar_dense.default"] * 2 * (F_ - 1)


class OpNames(TorchDispatchMode):
    """Names of the aten ops run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def test_grids_are_built_once_and_flow_work_runs_once_per_forward(randomise_dna):
    m = dna("light", randomise_dna)
    inputs = module_inputs()
    with torch.no_grad():
        m(*inputs)
        with OpNames() as ops:
            m(*inputs)
    assert "arange" not in ops.names and "meshgrid" not in ops.names  # the base grid is cached per size
    # Per step one grid_sample (the neighbour's warp); the fb check's warps run batched, once per pass.
    assert ops.names.count("grid_sample_2d") + ops.names.count("grid_sampler_2d") == 2 * (F_ - 1) + 2
    # The cache holds a few sizes, least recently used out first.
    assert warp._base_grid(H, W, CPU, torch.float32) is warp._base_grid(H, W, CPU, torch.float32)
    for side in range(1, 20):
        warp._base_grid(side, side, CPU, torch.float32)
    assert len(warp._GRIDS) == warp._GRIDS_KEPT and (H, W, CPU, torch.float32) not in warp._GRIDS


def tiny_unet(randomise):
    """The tiny FFF-VDI UNet (CPU, float32) with a random propagation module."""
    unet = presets.build_components("tiny", CPU, torch.float32, parts=("unet",)).unet
    randomise(unet.propagation)
    return unet


def conditioning(unet, f: int = 4, h: int = 4, w: int = 8) -> Conditioning:
    """A CFG-style conditioning for the tiny UNet, with masks and flows."""
    g = torch.Generator().manual_seed(5)
    _, masks, fw, bw = module_inputs(b=1)
    crop = (slice(None), slice(0, f), slice(None), slice(0, h), slice(0, w))
    latents = torch.randn(1, f, 4, h, w, generator=g)
    embeds = torch.randn(1, 1, unet.config.cross_attention_dim, generator=g)
    return Conditioning(latents, embeds, torch.tensor([[7.0, 127.0, 0.02]]), masks[crop], fw[crop][:, : f - 1],
                        bw[crop][:, : f - 1])


def test_cfg_halves_go_through_one_batched_call_equal_to_two_separate_ones(randomise_dna):
    unet = tiny_unet(randomise_dna)
    den, cond = EDMDenoiser(unet), conditioning(unet)
    uncond, scales = cond.unconditional(), guidance_scales(4)
    z = torch.randn(1, 4, 4, 4, 8, generator=torch.Generator().manual_seed(6))
    batches = []
    unet.propagation.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    with torch.no_grad():
        guided = CFGDenoiser(den, cond, uncond, scales)(z, torch.tensor(3.0))
        assert batches == [2]  # one UNet call, one propagation recurrence over both halves
        d_c, d_u = den(z, torch.tensor([3.0]), cond), den(z, torch.tensor([3.0]), uncond)
    torch.testing.assert_close(guided, d_u + scales.view(1, 4, 1, 1, 1) * (d_c - d_u), atol=1e-5, rtol=1e-5)


def tiny_pipe(comps, *overrides) -> FFFVDIPipeline:
    """A 2-step pipeline on a 64x128 canvas, 5 frames."""
    cfg = load_config(InferenceConfig, None, ["model.dtype=float32", "model.device=cpu", "sampling.num_steps=2",
                                              "window.height=64", "window.width=128", "window.num_frames=5",
                                              "window.decode_chunk_size=3", *overrides])
    return FFFVDIPipeline(comps, cfg, CPU, torch.float32)


def clip():
    """5 frames 64x128 with a fixed box hole."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 64, 128, 3), dtype=np.uint8)
    masks = np.zeros((5, 64, 128), np.uint8)
    masks[:, 16:48, 40:88] = 1
    return frames, masks


@pytest.fixture(scope="module")
def comps():
    """Tiny components (in memory) of this file's pipeline tests."""
    return presets.build_components("tiny", CPU, torch.float32)


def test_sampler_steps_of_the_pipeline_make_no_host_sync(comps, randomise_dna, monkeypatch):
    randomise_dna(comps.unet.propagation)
    per_step = []

    def counted(steps, **kwargs):  # the samplers' progress loop: each step's body runs under a counter
        for i in steps:
            with HostSyncCounter() as syncs:
                yield i
            per_step.append(syncs.calls)

    monkeypatch.setattr(samplers, "tqdm", counted)
    tiny_pipe(comps)(*clip(), torch.Generator().manual_seed(0))
    assert per_step == [[], []]  # two steps, each guided (2 x 4 frames) through the module, no value read back


def test_memory_compile_is_a_checked_choice_saved_with_the_config(tmp_path, comps):
    cfg = load_config(InferenceConfig, None, [])
    assert cfg.memory.compile == "none"  # eager until a GPU measures the gain
    assert "compile: none" in save_config(cfg, tmp_path / "config.yaml").read_text()
    bad = load_config(InferenceConfig, None, ["memory.compile=graphs"])
    with pytest.raises(ConfigError, match=r"^memory.compile='graphs' is unknown; use one of none, module, unet$"):
        check_inference_config(bad)
    with pytest.raises(ConfigError, match="memory.compile"):
        tiny_pipe(comps, "memory.compile=graphs")


@pytest.mark.slow
def test_compiled_module_matches_eager_through_the_pipeline(comps, randomise_dna):
    """memory.compile=module on its real backend (inductor: about 40 s of C++ compilation on a cold cache)."""
    randomise_dna(comps.unet.propagation)
    eager = tiny_pipe(comps)(*clip(), torch.Generator().manual_seed(0))
    compiled_pipe = tiny_pipe(comps, "memory.compile=module")
    assert comps.unet.propagation._compiled == ("inductor", None)
    compiled = compiled_pipe(*clip(), torch.Generator().manual_seed(0))
    tiny_pipe(comps)  # a later eager pipeline on the same components undoes it
    assert comps.unet.propagation._compiled is None
    assert np.abs(eager.astype(int) - compiled.astype(int)).max() <= 1  # float reassociation, then uint8 rounding


def test_compiled_unet_matches_eager(randomise_dna):
    """memory.compile=unet wraps the whole UNet (the module runs inside through the conv_in hook); graph capture is
    checked with the `eager` backend, as inductor compiles the UNet for minutes on a CPU."""
    unet = tiny_unet(randomise_dna)
    den, cond = EDMDenoiser(unet), conditioning(unet)
    z = torch.randn(1, 4, 4, 4, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = den(z, torch.tensor([3.0]), cond)
        unet.set_compile("unet", backend="eager")
        out = den(z, torch.tensor([3.0]), cond)
        unet.set_compile("none")
        assert unet.unet._compiled_call_impl is None and unet.propagation._compiled is None
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
