"""The FFF-VDI inpainting pipeline for one window of frames (long videos: fffvdi.inpaint.windows)."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig

from fffvdi.config import check_choices
from fffvdi.diffusion.conditioning import Conditioning, noise_augment, svd_conditioning
from fffvdi.diffusion.edm import EDMDenoiser, karras_sigmas
from fffvdi.diffusion.samplers import CFGDenoiser, guidance_scales, invert_euler, sample_euler
from fffvdi.inpaint.canvas import composite, from_canvas, plan_placement, to_canvas
from fffvdi.inpaint.conditioner import CLIP_SOURCES, Conditioner, clip_source_image, offloader, stay
from fffvdi.inpaint.config import resolve_canvas
from fffvdi.inpaint.first_frame_fill import fill_first_frame_noise
from fffvdi.models.loading import SVDComponents
from fffvdi.models.unet import COMPILE_TARGETS

logger = logging.getLogger(__name__)

FILL_SOURCES = ("noise", "inversion")  # sampling.fill_source: what future frames lend frame 0 (step 4 below)
OFFLOADS = ("none", "model")  # memory.offload: model = idle components wait on the CPU (`_on_device`)
ATTENTIONS = ("sdpa", "default")  # memory.attention: PyTorch's fused attention, or diffusers' default processor
# The pipeline's closed choices (check_inference_config checks them, and every other one, up front).
CHOICES = {"sampling.clip_source": CLIP_SOURCES, "sampling.fill_source": FILL_SOURCES, "memory.offload": OFFLOADS,
           "memory.attention": ATTENTIONS, "memory.compile": COMPILE_TARGETS}


class FFFVDIPipeline:
    """Inpaints one window: `pipe(frames uint8 [F,H,W,3], masks [F,H,W], generator) -> uint8 [F,H,W,3]`."""

    def __init__(self, components: SVDComponents, cfg: DictConfig, device: torch.device, dtype: torch.dtype):
        check_choices(cfg, CHOICES)  # also built by training's validation, whose config is not checked up front
        resolve_canvas(cfg)  # an unset canvas follows the checkpoint's training size
        self.c = components
        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        # memory.offload=model: parts wait on the CPU and visit the device one at a time (parked below)
        self._on_device = offloader(device) if cfg.memory.offload == "model" else stay
        self.denoiser = EDMDenoiser(components.unet, net_dtype=dtype)
        # Flows, VAE latents, CLIP: the same code training conditions with.
        self.cond = Conditioner(components, cfg.flow, device, dtype, cfg.window.decode_chunk_size, self._on_device)
        mem = cfg.memory
        if mem.forward_chunk_size:
            components.unet.unet.enable_forward_chunking(chunk_size=mem.forward_chunk_size, dim=1)
        if mem.attention == "default":
            components.unet.unet.set_default_attn_processor()
        components.unet.set_compile(mem.compile)  # also "none": components may be shared with an earlier pipeline
        if mem.offload == "model":  # park everything on the CPU; `_on_device` brings one part at a time
            for m in (components.unet, components.vae, components.image_encoder):
                m.to("cpu")

    def _randn(self, shape, generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise drawn on the CPU generator, so the same seed gives the same output on any device."""
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)

    @torch.no_grad()
    def _inverted_noise(self, cond_latents: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Unit-variance noise whose ODE trajectory ends at the frames' visible content (DDIM-style inversion).

        Only the visible parts matter: first-frame filling copies values from visible positions alone.
        """
        s = self.cfg.sampling
        z0 = cond_latents * self.c.vae.config.scaling_factor  # visible content in the diffusion latent scale
        sigmas = karras_sigmas(s.inversion_steps, s.sigma_min, s.sigma_max).to(self.device)
        with self._on_device(self.c.unet):
            return invert_euler(lambda z, sigma: self.denoiser(z, sigma, cond), z0, sigmas)

    @torch.no_grad()
    def __call__(
        self,
        frames: np.ndarray,
        masks: np.ndarray,
        generator: Optional[torch.Generator] = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Inpaint `frames uint8 [F, H, W, 3]` inside `masks [F, H, W]` (1 = hole); returns uint8 `[F, H, W, 3]`."""
        cfg, s = self.cfg, self.cfg.sampling
        if generator is None:
            generator = torch.Generator().manual_seed(s.seed)
        if not masks.any():  # nothing to inpaint: the input is the answer
            return frames.copy()
        num_frames = frames.shape[0]

        # 1. Preprocess: fit onto the model canvas (aspect kept and padded, or stretched), masks with nearest.
        place = plan_placement(frames.shape[1:3], (cfg.window.height, cfg.window.width), cfg.window.fit)
        video = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2)[None].float() / 127.5 - 1  # [1, F, 3, H, W]
        hole = torch.from_numpy(masks.astype(np.float32)).to(self.device)[None, :, None]  # [1, F, 1, H, W]
        video_c = to_canvas(video, place)  # [1, F, 3, h8, w8] on the canvas
        hole_c = (to_canvas(hole, place, nearest=True) > 0.5).float()

        # 2. Flows on the frames, completed inside the masks, then taken to latent resolution.
        flows_fw, flows_bw, flows_fw_l, flows_bw_l, masks_l = self.cond.complete_flows(*self.cond.flow_fn((video_c + 1) / 2), hole_c)

        # 3. Conditioning: each frame's masked pixels (+ noise augmentation) VAE-encoded; CLIP of the chosen source.
        masked = video_c * (1 - hole_c)
        cond_latents = self.cond.encode(noise_augment(masked, s.noise_aug_strength, self._randn(masked.shape, generator)))
        clip_image = clip_source_image(s.clip_source, video_c, hole_c, flows_fw, flows_bw)
        embeds = self.cond.clip_embed(clip_image)
        cond = svd_conditioning(cond_latents, embeds, s.noise_aug_strength, s.fps, s.motion_bucket_id, masks_l,
                                flows_fw_l, flows_bw_l)

        # 4. Initial noise; frame 0's hole cells traced along the flows to future frames that show them.
        noise = self._randn(cond_latents.shape, generator)  # [1, F, 4, h, w]
        if s.first_frame_filling and num_frames > 1:
            source = self._inverted_noise(cond_latents, cond) if s.fill_source == "inversion" else None
            noise, _ = fill_first_frame_noise(noise, masks_l, flows_fw_l, flows_bw_l, source_latents=source)

        # 5. EDM Euler sampling on Karras sigmas with per-frame guidance.
        sigmas = karras_sigmas(s.num_steps, s.sigma_min, s.sigma_max).to(self.device)
        scales = guidance_scales(num_frames, s.min_guidance_scale, s.max_guidance_scale, device=self.device)
        guided = CFGDenoiser(self.denoiser, cond, cond.unconditional(), scales)  # both halves batched, set up once
        with self._on_device(self.c.unet):
            latents = sample_euler(guided, noise, sigmas, progress=progress)

        # 6. Decode in chunks.  7. Composite at the input's own size: generated pixels only inside the mask.
        decoded = from_canvas(self.cond.decode(latents), place)  # [1, F, 3, H, W] in [-1, 1]
        generated = ((decoded[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return composite(frames, generated, masks, cfg.output.feather)
