"""Diffusion math, independent of inpainting: EDM preconditioning, schedules, denoiser and loss (`edm`), samplers and
per-frame guidance (`samplers`), SVD's conditioning and micro-conditioning recipe (`conditioning`), SVD's constants
(`recipe`, torch-free). Imports only `fffvdi.errors`."""
