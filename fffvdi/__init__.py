"""fffvdi: First Frame Filling Video Diffusion Inpainting (FFF-VDI), a complete open implementation."""

__version__ = "0.1.0"
