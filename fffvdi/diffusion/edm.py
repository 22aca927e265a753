"""EDM parametrisation of SVD (v-prediction, sigma_data = 1): scalings, noise schedules, denoiser and loss.

Conventions (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"):
- a noisy latent is `z = z0 + sigma * eps` (variance-exploding, unscaled), `eps ~ N(0, I)`;
- the denoiser is `D(z, sigma) = c_skip z + c_out F(c_in z, c_noise)` where F is the raw UNet;
- SVD uses sigma_data = 1 with a v-prediction target, so the scalings below are exactly the ones of
  diffusers' EulerDiscreteScheduler(prediction_type="v_prediction", timestep_type="continuous"):
  its `scale_model_input` divides by sqrt(sigma^2 + 1) (= c_in), its `timesteps` are 0.25 ln sigma
  (= c_noise) and its `pred_original_sample` is `c_out * model_output + c_skip * sample`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fffvdi.diffusion.conditioning import Conditioning
from fffvdi.diffusion.recipe import COND_AUG_MEAN, COND_AUG_STD, P_MEAN, P_STD, RHO, SIGMA_MAX, SIGMA_MIN
from fffvdi.errors import InputError


def edm_scalings(sigma: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """SVD's EDM preconditioning `(c_skip, c_out, c_in, c_noise)` for noise level(s) `sigma` (any shape)."""
    sigma = torch.as_tensor(sigma)
    s2p1 = sigma**2 + 1.0  # sigma^2 + sigma_data^2 with sigma_data = 1
    c_skip = 1.0 / s2p1
    c_out = -sigma / s2p1.sqrt()  # negative: v-prediction target is (eps - sigma z0) / sqrt(sigma^2 + 1)
    c_in = 1.0 / s2p1.sqrt()
    c_noise = 0.25 * sigma.log()  # -inf at sigma = 0; samplers never call the net there
    return c_skip, c_out, c_in, c_noise


def karras_sigmas(
    n: int,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    device: torch.device | str | None = None,
) -> Tensor:
    """Karras et al. schedule: `n` descending sigmas from sigma_max to sigma_min, then a final 0; float32 `[n+1]`."""
    if n < 1:
        raise InputError(f"karras_sigmas: number of steps must be >= 1, got {n}; pass a positive step count")
    if not 0.0 < sigma_min < sigma_max:
        raise InputError(f"karras_sigmas: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}; fix the schedule")
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    max_inv, min_inv = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho  # float64 like the reference, then float32
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=device, dtype=torch.float32)


def _lognormal(
    batch: int, mean: float, std: float, generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    """`[batch]` samples of exp(N(mean, std^2)), float32, drawn with `generator` on `device`."""
    normal = torch.randn(batch, generator=generator, device=device, dtype=torch.float32)
    return (mean + std * normal).exp()


def sample_training_sigmas(
    batch: int,
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Training noise levels `[B]`: ln sigma ~ N(p_mean, p_std^2) (EDM / SVD recipe)."""
    return _lognormal(batch, p_mean, p_std, generator, device)


def sample_cond_aug(
    batch: int,
    mean: float = COND_AUG_MEAN,
    std: float = COND_AUG_STD,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Conditioning-augmentation noise strengths `[B]`: ln sigma_c ~ N(mean, std^2); also the noise_aug time id."""
    return _lognormal(batch, mean, std, generator, device)


def loss_weight(sigma: Tensor) -> Tensor:
    """EDM loss weight `(sigma^2 + sigma_data^2) / (sigma sigma_data)^2` with sigma_data = 1."""
    return (1.0 + sigma**2) / sigma**2


def _per_sample(sigma: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """Noise level as `[B]` on `like`'s device in at least float32 (sigma^2 overflows fp16); scalars broadcast."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    sigma = torch.as_tensor(sigma, dtype=dtype, device=like.device).reshape(-1)
    if sigma.numel() not in (1, batch):
        raise InputError(f"sigma has {sigma.numel()} values for batch {batch}; pass a scalar or one per batch item")
    return sigma.expand(batch)


class EDMDenoiser(nn.Module):
    """EDM denoiser `D(z, sigma; cond)` around an SVD-style video UNet, plus its training loss.

    net: module called with keywords `sample [B,F,8,h,w], timestep [B] (= c_noise), encoder_hidden_states [B,1,D],
        added_time_ids [B,3], masks, flows_fw, flows_bw` returning the raw v-prediction F `[B,F,4,h,w]`
        (FFFVDIUNet's signature).
    p_mean, p_std: log-normal training-sigma distribution used by `loss` when no sigma is given.
    net_dtype: dtype the network input is cast to (e.g. torch.float16 for a half UNet); None keeps z's dtype.
        Scalings are computed in at least float32; D is returned in z's dtype.
    """

    def __init__(self, net: nn.Module, p_mean: float = P_MEAN, p_std: float = P_STD, net_dtype: torch.dtype | None = None):
        super().__init__()
        self.net = net
        self.p_mean = p_mean
        self.p_std = p_std
        self.net_dtype = net_dtype

    def forward(self, z: Tensor, sigma: Tensor | float, cond: Conditioning) -> Tensor:
        """Denoised estimate `[B, F, 4, h, w]` of the clean latent from `z [B, F, 4, h, w]` at noise `sigma [B]`."""
        if z.ndim != 5 or z.shape[:2] != cond.latents.shape[:2] or z.shape[3:] != cond.latents.shape[3:]:
            raise InputError(f"EDMDenoiser: z {tuple(z.shape)} does not match conditioning latents {tuple(cond.latents.shape)}")
        sigma = _per_sample(sigma, z.shape[0], z)  # [B]
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
        c_skip, c_out, c_in = (c.view(-1, 1, 1, 1, 1) for c in (c_skip, c_out, c_in))
        net_dtype = self.net_dtype or z.dtype
        x_in = torch.cat([c_in * z, cond.latents.to(z.dtype)], dim=2).to(net_dtype)  # [B, F, 8, h, w]
        out = self.net(
            sample=x_in,
            timestep=c_noise.to(net_dtype),
            encoder_hidden_states=cond.image_embeds.to(net_dtype),
            added_time_ids=cond.added_time_ids.to(net_dtype),
            masks=cond.masks,
            flows_fw=cond.flows_fw,
            flows_bw=cond.flows_bw,
        )  # [B, F, 4, h, w]
        return (c_skip * z + c_out * out.to(c_out.dtype)).to(z.dtype)

    def loss(
        self,
        z0: Tensor,
        cond: Conditioning,
        generator: torch.Generator | None = None,
        sigma: Tensor | None = None,
        mask_weight: float = 0.0,
        masks_lat: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """EDM loss: mean over batch, frames and pixels of `(1+sigma^2)/sigma^2 * (1 + mask_weight*M) * |D - z0|^2`.

        z0: clean latents `[B, F, 4, h, w]`.
        generator: drives the sigma and eps draws (must live on z0's device); None uses the global RNG.
        sigma: `[B]` noise levels to use instead of sampling LogNormal(p_mean, p_std).
        mask_weight: extra relative weight inside the latent mask (0 = plain EDM loss).
        masks_lat: `[B, F, 1, h, w]` latent mask (1 = hole) for the extra weight; None falls back to cond.masks.
        Returns the scalar loss and detached 0-d logs: loss, mse (unweighted), sigma_mean, and the per-region
        mse_hole / mse_known (inside / outside the latent mask) when a mask is known.
        """
        b = z0.shape[0]
        if sigma is None:
            sigma = sample_training_sigmas(b, self.p_mean, self.p_std, generator=generator, device=z0.device)
        sigma = _per_sample(sigma, b, z0)  # [B]
        eps = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        z = (z0 + sigma.view(-1, 1, 1, 1, 1) * eps).to(z0.dtype)
        sq_err = (self(z, sigma, cond) - z0) ** 2  # [B, F, 4, h, w]
        weight = loss_weight(sigma).view(-1, 1, 1, 1, 1)
        mask = masks_lat if masks_lat is not None else cond.masks
        if mask_weight != 0.0:
            if mask is None:
                raise InputError("EDMDenoiser.loss: mask_weight > 0 needs masks_lat or cond.masks; pass a latent mask")
            weight = weight * (1.0 + mask_weight * mask.to(z0.dtype))  # broadcast over channels
        loss = (weight * sq_err).mean()
        logs = {"loss": loss.detach(), "mse": sq_err.detach().mean(), "sigma_mean": sigma.detach().mean()}
        if mask is not None:
            m = mask.to(z0.dtype).expand_as(sq_err)
            logs["mse_hole"] = (sq_err.detach() * m).sum() / m.sum().clamp_min(1.0)
            logs["mse_known"] = (sq_err.detach() * (1 - m)).sum() / (1 - m).sum().clamp_min(1.0)
        return loss, logs

