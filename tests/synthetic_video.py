"""Synthetic videos with known motion for tests: a smooth random texture translated by a fixed shift per frame."""
import numpy as np
import torch

H, W = 64, 96  # default frame size


def _texture_frames(shift, n_frames, size, corr, seed, pad) -> np.ndarray:
    """float64 `[F, 3, H, W]` in [0, 1]: a Gaussian-smoothed texture moved by `shift`=(dx, dy) px per frame."""
    rng = np.random.default_rng(seed)
    hh, ww = size[0] + 2 * pad, size[1] + 2 * pad  # padded so content entering the view is texture, not wrap
    ky, kx = np.fft.fftfreq(hh)[:, None], np.fft.fftfreq(ww)[None, :]
    spec = np.fft.fft2(rng.standard_normal((3, hh, ww))) * np.exp(-2 * (np.pi * corr) ** 2 * (kx**2 + ky**2))
    frames = [  # Fourier shift: exact for sub-pixel motion too
        np.real(np.fft.ifft2(spec * np.exp(-2j * np.pi * t * (kx * shift[0] + ky * shift[1]))))[
            :, pad : pad + size[0], pad : pad + size[1]
        ]
        for t in range(n_frames)
    ]
    v = np.stack(frames)
    v = (v - v.mean()) / (4 * v.std()) + 0.5
    return np.clip(v, 0, 1)


def translating_video(shift, n_frames=8, size=(H, W), corr=3.0, seed=0, pad=32) -> torch.Tensor:
    """float32 `[1, F, 3, H, W]` in [0, 1] moving by `shift`=(dx, dy) px per frame."""
    return torch.from_numpy(_texture_frames(shift, n_frames, size, corr, seed, pad)).float()[None]


def translating_frames(shift, n_frames=8, size=(H, W), corr=3.0, seed=0, pad=32) -> np.ndarray:
    """uint8 `[F, H, W, 3]` moving by `shift`=(dx, dy) px per frame."""
    v = _texture_frames(shift, n_frames, size, corr, seed, pad).transpose(0, 2, 3, 1)
    return (v * 255).round().astype(np.uint8)


def const_flow(shift, n, h=H, w=W) -> torch.Tensor:
    """`[1, n, 2, h, w]` flow of the same (dx, dy) everywhere."""
    return torch.tensor(shift, dtype=torch.float32).view(1, 1, 2, 1, 1).expand(1, n, 2, h, w).clone()
