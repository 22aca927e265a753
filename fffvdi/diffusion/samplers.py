"""Deterministic EDM samplers (Euler, Heun), Euler inversion and SVD's per-frame classifier-free guidance.

A `denoise_fn(x, sigma [B]) -> D` is any callable returning the denoised estimate of `x` at noise level
`sigma`, e.g. `lambda x, s: cfg_denoise(denoiser, x, s, cond, uncond, scales)`. Samplers take a descending
schedule `sigmas [n+1]` ending in 0 (see `fffvdi.diffusion.edm.karras_sigmas`) and follow the probability-flow ODE
`dx/dsigma = (x - D(x, sigma)) / sigma` (Karras et al. 2022, Algorithm 1 without churn).
"""
from __future__ import annotations

import itertools
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from fffvdi.diffusion.conditioning import Conditioning
from fffvdi.diffusion.edm import EDMDenoiser
from fffvdi.errors import InputError

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor], None]


def guidance_scales(
    num_frames: int,
    min_scale: float = 1.0,
    max_scale: float = 3.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """SVD's per-frame CFG scales `[F]`, linear from `min_scale` (frame 0) to `max_scale` (last frame)."""
    if num_frames < 1:
        raise InputError(f"guidance_scales: num_frames must be >= 1, got {num_frames}")
    return torch.linspace(min_scale, max_scale, num_frames, device=device, dtype=dtype)


class CFGDenoiser:
    """SVD's per-frame guided denoiser `(z, sigma) -> D_u + s_f (D_c - D_u)`, set up once for a whole sampling loop.

    What does not change between steps is prepared here, so a step reads no value on the host and repeats no copy:
    whether guidance is on (as in diffusers' SVD pipeline, off when `max(scales) <= 1`: one conditional call), the
    batch `[uncond, cond]` of size 2B that runs both halves through one UNet call (and one propagation
    recurrence), and the scales' broadcast shape.
    """

    def __init__(self, denoiser: EDMDenoiser, cond: Conditioning, uncond: Conditioning, scales: Tensor) -> None:
        f = cond.latents.shape[1]
        if scales.numel() != f:
            raise InputError(f"cfg_denoise: {scales.numel()} guidance scales for {f} frames; pass one scale per frame")
        self.denoiser, self.cond = denoiser, cond
        self.guided = bool(scales.max() > 1.0)  # the one host read, before the loop
        self.both = Conditioning.cat([uncond, cond]) if self.guided else None  # [2B, ...]
        self.scales = scales.view(1, f, 1, 1, 1)

    def __call__(self, z: Tensor, sigma: Tensor | float) -> Tensor:
        """Guided estimate for `z [B, F, 4, h, w]` at `sigma` (a scalar or `[B]`)."""
        b = z.shape[0]
        sigma = torch.as_tensor(sigma, dtype=z.dtype, device=z.device).reshape(-1).expand(b)  # [B]
        if not self.guided:
            return self.denoiser(z, sigma, self.cond)
        d_u, d_c = self.denoiser(torch.cat([z, z]), torch.cat([sigma, sigma]), self.both).chunk(2)  # [2B, ...]
        return d_u + self.scales.to(z.dtype) * (d_c - d_u)


def cfg_denoise(
    denoiser: EDMDenoiser,
    z: Tensor,
    sigma: Tensor | float,
    cond: Conditioning,
    uncond: Conditioning,
    scales: Tensor,
) -> Tensor:
    """Per-frame guided estimate `D_u + s_f (D_c - D_u)` for `z [B, F, 4, h, w]`, `scales [F]` (one call of
    `CFGDenoiser`, which a sampling loop builds once). Guidance is off (one conditional call) when `max(scales) <= 1`;
    otherwise cond and uncond run as one batch `[uncond, cond]` of size 2B."""
    f = z.shape[1]
    if scales.numel() != f:
        raise InputError(f"cfg_denoise: {scales.numel()} guidance scales for {f} frames; pass one scale per frame")
    return CFGDenoiser(denoiser, cond, uncond, scales)(z, sigma)


def _check_schedule(sigmas: Tensor, name: str) -> list[float]:
    """The schedule's values on the host (read once, so steps need not), after rejecting ones samplers cannot walk."""
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise InputError(f"{name}: sigmas must be a 1-D schedule of n+1 >= 2 values, got shape {tuple(sigmas.shape)}")
    levels = sigmas.tolist()
    if any(b > a for a, b in itertools.pairwise(levels)) or any(v <= 0 for v in levels[:-1]):
        raise InputError(f"{name}: sigmas must be positive and non-increasing (last may be 0); use karras_sigmas")
    return levels


def _state_dtype(x: Tensor) -> torch.dtype:
    """Integrate in at least float32, whatever the network runs in."""
    return torch.promote_types(x.dtype, torch.float32)


def _sample(
    denoise_fn: DenoiseFn,
    noise: Tensor,
    sigmas: Tensor,
    heun: bool,
    name: str,
    progress: bool,
    callback: Callback | None,
) -> Tensor:
    """Walk the schedule with Euler steps, each with Heun's trapezoidal correction when `heun` (not into sigma 0)."""
    levels = _check_schedule(sigmas, name)
    sigmas = sigmas.to(device=noise.device, dtype=_state_dtype(noise))
    x = noise.to(sigmas.dtype) * sigmas[0]
    b = x.shape[0]
    for i in tqdm(range(len(sigmas) - 1), disable=not progress, desc="denoising"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise_fn(x, sigma.expand(b)).to(x.dtype)
        d = (x - denoised) / sigma
        x_next = x + d * (sigma_next - sigma)  # Euler
        if heun and levels[i + 1] > 0:  # slope at the Euler prediction; the ODE slope at sigma 0 is undefined
            d_next = (x_next - denoise_fn(x_next, sigma_next.expand(b)).to(x.dtype)) / sigma_next
            x_next = x + 0.5 * (d + d_next) * (sigma_next - sigma)
        x = x_next
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_euler(
    denoise_fn: DenoiseFn,
    noise: Tensor,
    sigmas: Tensor,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """First-order deterministic EDM sampler; returns the clean sample reached at `sigmas[-1]`.

    noise: unit-variance noise (any shape with batch first); the sampler scales it by `sigmas[0]`.
    progress: show a tqdm bar over the n steps.
    callback: `callback(i, x, denoised)` after step i with the updated state and that step's estimate.
    """
    return _sample(denoise_fn, noise, sigmas, heun=False, name="sample_euler", progress=progress, callback=callback)


def sample_heun(
    denoise_fn: DenoiseFn,
    noise: Tensor,
    sigmas: Tensor,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Second-order deterministic EDM sampler (Heun; Euler on the last step to sigma 0); 2n-1 network calls.

    Arguments as in `sample_euler`.
    """
    return _sample(denoise_fn, noise, sigmas, heun=True, name="sample_heun", progress=progress, callback=callback)


def invert_euler(
    denoise_fn: DenoiseFn,
    x0: Tensor,
    sigmas: Tensor,
    refine_iters: int = 0,
    progress: bool = False,
) -> Tensor:
    """Deterministic Euler inversion of clean `x0` up the sampling schedule; returns unit-variance noise.

    `sigmas` is the same descending schedule the sampler uses; it is walked from its end (0) to sigmas[0],
    each step using the ODE slope at the current (lower) level, as in DDIM inversion. The slope at sigma 0 is
    undefined, so the first step evaluates the denoiser at the first positive level instead.
    refine_iters: fixed-point iterations per step that move it towards the exact inverse of `sample_euler`'s
        step (x_hi = x_lo - slope(x_hi, sigma_hi) (sigma_lo - sigma_hi)); each costs one more denoiser call.
        0 is plain inversion (round trip off by a few % to tens of % at 25-50 steps); 3-5 make it near exact.
    The result is `x(sigmas[0]) / sigmas[0]`, so `sample_euler(denoise_fn, invert_euler(denoise_fn, x0, s), s)`
    approximately returns x0.
    """
    levels = _check_schedule(sigmas, "invert_euler")[::-1]  # ascending, on the host
    rising = sigmas.flip(0).to(device=x0.device, dtype=_state_dtype(x0))  # [n+1] ascending
    x = x0.to(rising.dtype)
    b = x.shape[0]

    def slope(y: Tensor, level: Tensor) -> Tensor:
        return (y - denoise_fn(y, level.expand(b)).to(y.dtype)) / level

    for i in tqdm(range(len(rising) - 1), disable=not progress, desc="inverting"):
        sigma, sigma_next = rising[i], rising[i + 1]
        at = sigma if levels[i] > 0 else sigma_next  # level where the explicit slope is evaluated
        x_next = x + slope(x, at) * (sigma_next - sigma)
        for _ in range(refine_iters):
            x_next = x + slope(x_next, sigma_next) * (sigma_next - sigma)
        x = x_next
    return x / rising[-1]


__all__ = ["CFGDenoiser", "cfg_denoise", "guidance_scales", "invert_euler", "sample_euler", "sample_heun"]
