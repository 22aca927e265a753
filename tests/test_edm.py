"""Oracle tests for the EDM parametrisation, denoiser, loss and samplers.

Main oracle: data x0 ~ N(mu, s^2) per element. Its exact denoiser is D*(x, sigma) = mu + s^2/(s^2+sigma^2)(x - mu)
and the probability-flow ODE has the closed-form solution x(sigma) - mu = (x(sigma_max) - mu) sqrt(s^2+sigma^2)
/ sqrt(s^2+sigma_max^2).
"""
from __future__ import annotations

import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler
from torch import nn

from fffvdi.diffusion.conditioning import Conditioning, added_time_ids
from fffvdi.diffusion.edm import (
    EDMDenoiser, edm_scalings, karras_sigmas, loss_weight, sample_cond_aug, sample_training_sigmas,
)
from fffvdi.diffusion.samplers import cfg_denoise, guidance_scales, invert_euler, sample_euler, sample_heun
from fffvdi.errors import InputError

# SVD's scheduler (SPEC section 8), written out here so this file checks against the spec, not our code.
SVD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    prediction_type="v_prediction", use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0,
    timestep_spacing="leading", steps_offset=1, timestep_type="continuous", interpolation_type="linear",
)
MU, S = 0.5, 0.3


def gaussian_denoiser(mu: float, s: float):
    """Exact optimal denoiser of N(mu, s^2) data as a `denoise_fn(x, sigma [B])`."""
    def fn(x, sigma):
        sig = sigma.view(-1, *[1] * (x.ndim - 1))
        return mu + s**2 / (s**2 + sig**2) * (x - mu)
    return fn


class GaussianVNet(nn.Module):
    """'UNet' that outputs the exact v-target E[(eps - sigma z0)/sqrt(sigma^2+1) | z] for z0 ~ N(mu, s^2).

    mu is read from the conditioning-latent channels, s from image_embeds[:, 0, 0]; sigma from the c_noise
    timestep. Only correct if the denoiser scales, concatenates and routes everything as SVD does.
    """

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))  # for gradient checks; 1 = exact
        self.calls: list[dict] = []

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, masks, flows_fw, flows_bw):
        self.calls.append(dict(batch=sample.shape[0], time_ids=added_time_ids, masks=masks, flows_fw=flows_fw))
        sigma = (4.0 * timestep).exp().view(-1, 1, 1, 1, 1)
        z = sample[:, :, :4] * (sigma**2 + 1).sqrt()  # undo c_in
        mu = sample[:, :, 4:]
        s = encoder_hidden_states[:, 0, 0].view(-1, 1, 1, 1, 1)
        d_star = mu + s**2 / (s**2 + sigma**2) * (z - mu)
        eps_hat = (z - d_star) / sigma
        return self.gain * (eps_hat - sigma * d_star) / (sigma**2 + 1).sqrt()


class ZeroNet(nn.Module):
    def forward(self, sample, **kwargs):
        return torch.zeros_like(sample[:, :, :4])


def make_cond(b=2, f=3, h=4, w=5, mu=MU, s=S, dtype=torch.float32, masks=None) -> Conditioning:
    return Conditioning(
        latents=torch.full((b, f, 4, h, w), mu, dtype=dtype),
        image_embeds=torch.full((b, 1, 8), s, dtype=dtype),
        added_time_ids=added_time_ids(7, 127, 0.02, b, dtype=dtype),
        masks=masks,
    )


def svd_scheduler(steps: int) -> EulerDiscreteScheduler:
    sch = EulerDiscreteScheduler(**SVD_SCHEDULER)
    sch.set_timesteps(steps)
    return sch


# --- scalings and schedules ------------------------------------------------------------------------------------
def test_scalings_hand_values():
    c_skip, c_out, c_in, c_noise = edm_scalings(torch.tensor([1.0, math.exp(4.0), 0.0], dtype=torch.float64))
    assert torch.allclose(c_skip[:2], torch.tensor([0.5, 1 / (math.exp(8) + 1)], dtype=torch.float64))
    assert torch.allclose(c_out[0], torch.tensor(-1 / math.sqrt(2), dtype=torch.float64))
    assert torch.allclose(c_in[0], torch.tensor(1 / math.sqrt(2), dtype=torch.float64))
    assert c_noise[0] == 0.0 and torch.isclose(c_noise[1], torch.tensor(1.0, dtype=torch.float64))
    assert c_skip[2] == 1.0 and c_out[2] == 0.0  # sigma 0: D is the identity
    sig = torch.logspace(-3, 3, 13, dtype=torch.float64)
    c_skip, c_out, _, _ = edm_scalings(sig)
    assert torch.allclose(c_skip + c_out**2, torch.ones_like(sig))  # sigma_data = 1 identity
    assert torch.allclose(loss_weight(sig), 1 / c_out**2)  # EDM: lambda = 1 / c_out^2


def test_scalings_match_diffusers_scheduler():
    sch = svd_scheduler(25)
    sigmas = sch.sigmas[:-1]
    _, _, c_in, c_noise = edm_scalings(sigmas)
    assert torch.allclose(sch.timesteps, c_noise, atol=1e-6)  # continuous timesteps are c_noise
    g = torch.Generator().manual_seed(0)
    sample, model_out = torch.randn(2, 25, 3, 4, generator=g), torch.randn(2, 25, 3, 4, generator=g)
    for i, t in enumerate(sch.timesteps[:3]):
        c_skip, c_out, c_in, _ = edm_scalings(sigmas[i])
        assert torch.allclose(sch.scale_model_input(sample, t), c_in * sample)
        out = sch.step(model_out, t, sample)
        assert torch.allclose(out.pred_original_sample, c_skip * sample + c_out * model_out, atol=1e-5)


def test_karras_sigmas_hand_values_and_match_diffusers():
    assert torch.allclose(karras_sigmas(1), torch.tensor([700.0, 0.0]))
    assert torch.allclose(karras_sigmas(2), torch.tensor([700.0, 0.002, 0.0]))
    mid = ((700 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    assert torch.allclose(karras_sigmas(3), torch.tensor([700.0, mid, 0.002, 0.0]))
    sig = karras_sigmas(25)
    assert sig.shape == (26,) and sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all())
    assert torch.equal(sig, svd_scheduler(25).sigmas)  # identical schedule, bit for bit
    with pytest.raises(InputError):
        karras_sigmas(0)


def test_training_sigma_and_cond_aug_distributions():
    n = 20000  # SE of the log-mean is std/sqrt(n) <= 0.012; tolerances are about 4 SE
    log_sig = sample_training_sigmas(n, generator=torch.Generator().manual_seed(1)).log()
    assert abs(log_sig.mean().item() - 0.7) < 0.05 and abs(log_sig.std().item() - 1.6) < 0.05
    log_aug = sample_cond_aug(n, generator=torch.Generator().manual_seed(2)).log()
    assert abs(log_aug.mean().item() + 3.0) < 0.015 and abs(log_aug.std().item() - 0.5) < 0.015
    a = sample_training_sigmas(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, sample_training_sigmas(4, generator=torch.Generator().manual_seed(3)))


def test_added_time_ids():
    ids = added_time_ids(7, 127, torch.tensor([0.1, 0.2]), batch=2)
    assert torch.equal(ids, torch.tensor([[7.0, 127.0, 0.1], [7.0, 127.0, 0.2]]))
    assert torch.equal(added_time_ids(7, 127, 0.02, batch=3)[:, 2], torch.full((3,), 0.02))
    with pytest.raises(InputError):
        added_time_ids(7, 127, torch.zeros(3), batch=2)


# --- conditioning --------------------------------------------------------------------------------------------------
def test_conditioning_helpers():
    cond = make_cond(masks=torch.ones(2, 3, 1, 4, 5))
    unc = cond.unconditional()
    assert unc.latents.abs().sum() == 0 and unc.image_embeds.abs().sum() == 0
    assert torch.equal(unc.added_time_ids, cond.added_time_ids) and torch.equal(unc.masks, cond.masks)
    both = Conditioning.cat([unc, cond])
    assert both.batch_size == 4 and torch.equal(both.latents[2:], cond.latents) and both.flows_fw is None
    half = cond.to(dtype=torch.float16)
    assert half.latents.dtype == torch.float16 and half.masks.dtype == torch.float16
    dropped = cond.drop(torch.tensor([True, False]), torch.tensor([False, True]))
    assert dropped.image_embeds[0].abs().sum() == 0 and torch.equal(dropped.image_embeds[1], cond.image_embeds[1])
    assert torch.equal(dropped.latents[0], cond.latents[0]) and dropped.latents[1].abs().sum() == 0
    with pytest.raises(InputError):
        Conditioning(cond.latents, cond.image_embeds[:1], cond.added_time_ids)
    with pytest.raises(InputError):
        Conditioning.cat([cond, make_cond()])  # masks set in one only


# --- denoiser and loss ---------------------------------------------------------------------------------------------
def test_denoiser_with_exact_v_net_is_the_optimal_denoiser():
    net = GaussianVNet()
    den = EDMDenoiser(net).double()
    cond = make_cond(dtype=torch.float64)
    z = torch.randn(2, 3, 4, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    sigma = torch.tensor([0.05, 40.0], dtype=torch.float64)
    expected = gaussian_denoiser(MU, S)(z, sigma)
    assert torch.allclose(den(z, sigma, cond), expected, atol=1e-10)
    assert torch.equal(net.calls[-1]["time_ids"], cond.added_time_ids)
    with pytest.raises(InputError):
        den(z[:, :2], sigma, cond)  # frame count differs from the conditioning


def test_denoiser_half_precision_stays_finite_at_sigma_max():
    z = torch.randn(2, 3, 4, 4, 5, generator=torch.Generator().manual_seed(1)).half() * 700  # sigma^2 > fp16 max
    out = EDMDenoiser(ZeroNet())(z, torch.tensor([700.0, 1.0]), make_cond(dtype=torch.float16))
    assert out.dtype == torch.float16 and bool(out.isfinite().all())
    assert torch.allclose(out[1].float(), z[1].float() / 2, rtol=1e-3)  # c_skip(1) = 1/2


def test_loss_zero_net_matches_hand_formula():
    den = EDMDenoiser(ZeroNet())
    z0 = torch.randn(2, 3, 4, 4, 5, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor([0.3, 2.0])
    loss, logs = den.loss(z0, make_cond(), generator=torch.Generator().manual_seed(7), sigma=sigma)
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(7))
    sig = sigma.view(-1, 1, 1, 1, 1)
    c_skip = 1 / (sig**2 + 1)
    by_hand = ((1 + sig**2) / sig**2 * (c_skip * (z0 + sig * eps) - z0) ** 2).mean()
    assert torch.isfinite(loss) and torch.allclose(loss, by_hand, rtol=1e-5)
    assert torch.allclose(logs["sigma_mean"], sigma.mean())


def test_loss_of_optimal_denoiser_is_one_for_unit_gaussian():
    # With s = 1 the expected weighted error of D* is (1+sigma^2)/sigma^2 * sigma^2/(1+sigma^2) = 1 for every sigma.
    net = GaussianVNet()
    den = EDMDenoiser(net)
    b, f, h, w = 4, 4, 16, 16  # N = 16384 squared normals: SE of the mean = sqrt(2/N) ~ 0.011
    cond = make_cond(b, f, h, w, mu=0.0, s=1.0)
    g = torch.Generator().manual_seed(11)
    z0 = torch.randn(b, f, 4, h, w, generator=g)
    loss, _ = den.loss(z0, cond, generator=g)  # sigmas from the LogNormal recipe
    assert abs(loss.item() - 1.0) < 0.06
    loss.backward()
    assert net.gain.grad is not None and torch.isfinite(net.gain.grad) and net.gain.grad.abs() > 0


def test_mask_weight_adds_loss_only_inside_mask():
    den = EDMDenoiser(GaussianVNet())
    z0 = torch.randn(2, 3, 4, 4, 5, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(2, 3, 1, 4, 5)
    mask[:, :, :, :2] = 1
    cond, sigma = make_cond(masks=mask), torch.tensor([0.5, 3.0])

    def run(**kw):
        return den.loss(z0, cond, generator=torch.Generator().manual_seed(9), sigma=sigma, **kw)

    base, logs = run()
    weighted, _ = run(mask_weight=2.0)
    empty, _ = run(mask_weight=2.0, masks_lat=torch.zeros_like(mask))
    # Recompute the squared error of the same draw to get the in-mask part by hand.
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(9))
    sq = (den(z0 + sigma.view(-1, 1, 1, 1, 1) * eps, sigma, cond) - z0) ** 2
    inside = (loss_weight(sigma).view(-1, 1, 1, 1, 1) * sq * mask).mean()
    assert weighted > base and torch.allclose(weighted - base, 2.0 * inside, rtol=1e-4)
    assert torch.allclose(empty, base)
    assert torch.allclose(logs["mse_hole"], (sq * mask).sum() / (mask.sum() * 4), rtol=1e-5)
    assert torch.allclose(logs["mse_known"], (sq * (1 - mask)).sum() / ((1 - mask).sum() * 4), rtol=1e-5)
    with pytest.raises(InputError):
        den.loss(z0, make_cond(), sigma=sigma, mask_weight=1.0)


# --- guidance ------------------------------------------------------------------------------------------------------
def test_guidance_scales_endpoints():
    sc = guidance_scales(5)
    assert torch.allclose(sc, torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))
    assert torch.equal(guidance_scales(1, 2.0, 4.0), torch.tensor([2.0]))


def test_cfg_denoise():
    net = GaussianVNet()
    den = EDMDenoiser(net)
    cond = make_cond(b=2, f=3)
    unc = Conditioning(cond.latents + 1.0, cond.image_embeds * 2, cond.added_time_ids)  # distinct, nonzero
    z = torch.randn(2, 3, 4, 4, 5, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([1.0, 2.0])
    d_c, d_u = den(z, sigma, cond), den(z, sigma, unc)
    net.calls.clear()
    assert torch.allclose(cfg_denoise(den, z, sigma, cond, unc, torch.ones(3)), d_c)
    assert [c["batch"] for c in net.calls] == [2]  # uncond skipped
    scales = torch.tensor([1.0, 2.0, 3.0])
    out = cfg_denoise(den, z, sigma, cond, unc, scales)
    assert [c["batch"] for c in net.calls[1:]] == [4]  # one batched call
    assert torch.allclose(out, d_u + scales.view(1, 3, 1, 1, 1) * (d_c - d_u), atol=1e-5)
    assert torch.allclose(out[:, 0], d_c[:, 0], atol=1e-5)  # scale 1 on frame 0 gives the cond output


# --- samplers ------------------------------------------------------------------------------------------------------
def euler_factor(sigmas: torch.Tensor, s: float) -> float:
    """Product of Euler's per-step factors on x - mu for the Gaussian ODE (the exact discrete map)."""
    p = 1.0
    for a, b in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        p *= 1 + a * (b - a) / (s**2 + a**2)
    return p


def test_sample_euler_exact_recursion_and_statistics():
    sig = karras_sigmas(50).double()
    noise = torch.randn(4, 4, 4, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    steps = []
    x = sample_euler(gaussian_denoiser(MU, S), noise, sig, callback=lambda i, x, d: steps.append((i, d)))
    p = euler_factor(sig, S)
    assert torch.allclose(x, MU + p * (700.0 * noise - MU), atol=1e-10)
    assert [i for i, _ in steps] == list(range(50)) and torch.allclose(steps[-1][1], x)  # last step lands on D
    # N = 16384: SE(mean) = s/sqrt(N) ~ 0.0023, SE(std) ~ 0.0017. Euler's first-order bias shrinks the std by
    # ~9 % at 50 Karras steps for this s (closed form above), so std gets 12 %; Heun (second order) ~1.6 % -> 4 %.
    assert abs(x.mean().item() - MU) < 0.012
    assert abs(x.std().item() / S - 1) < 0.12
    xh = sample_heun(gaussian_denoiser(MU, S), noise, sig, progress=True)
    assert abs(xh.mean().item() - MU) < 0.012 and abs(xh.std().item() / S - 1) < 0.04


def test_sampler_convergence_order():
    f = gaussian_denoiser(MU, S)
    noise = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = MU + (700.0 * noise - MU) * S / math.sqrt(S**2 + 700.0**2)

    def err(sampler, n):
        return (sampler(f, noise, karras_sigmas(n).double()) - exact).abs().max().item()

    assert 1.6 < err(sample_euler, 50) / err(sample_euler, 100) < 2.4  # first order
    assert 3.0 < err(sample_heun, 50) / err(sample_heun, 100) < 5.0  # second order


def test_invert_then_sample_round_trips():
    f = gaussian_denoiser(MU, S)
    sig = karras_sigmas(50).double()
    noise = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x0 = sample_euler(f, noise, sig)

    def rel_err(iters):
        z = invert_euler(f, x0, sig, refine_iters=iters)
        return ((sample_euler(f, z, sig) - x0).norm() / (x0 - MU).norm()).item(), z

    plain, _ = rel_err(0)
    refined, z = rel_err(5)
    assert plain < 0.25  # first-order inversion: measured ~0.17
    assert refined < 1e-3 and refined < plain / 100
    assert torch.allclose(z, noise, atol=1e-2)  # recovers the very noise that generated x0


def test_euler_denoiser_pipeline_matches_diffusers_loop():
    net = GaussianVNet()
    den = EDMDenoiser(net)
    b, f, h, w = 1, 3, 4, 4
    cond = make_cond(b, f, h, w)
    noise = torch.randn(b, f, 4, h, w, generator=torch.Generator().manual_seed(6))
    ours = sample_euler(lambda x, s: den(x, s, cond), noise, karras_sigmas(25))
    sch = svd_scheduler(25)
    lat = noise * sch.init_noise_sigma  # sqrt(700^2 + 1) with "leading" spacing vs our 700: 1e-6 relative
    for t in sch.timesteps:
        inp = torch.cat([sch.scale_model_input(lat, t), cond.latents], dim=2)
        v = net(inp, t.expand(b), cond.image_embeds, cond.added_time_ids, None, None, None)
        lat = sch.step(v, t, lat).prev_sample
    assert torch.allclose(ours, lat, atol=1e-5)  # measured 1e-6


def test_schedule_validation():
    f = gaussian_denoiser(MU, S)
    with pytest.raises(InputError):
        sample_euler(f, torch.zeros(1, 2), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(InputError):
        invert_euler(f, torch.zeros(1, 2), torch.tensor([1.0]))
