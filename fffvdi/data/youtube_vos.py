"""Training clips from a YouTube-VOS style folder: `ROOT/JPEGImages/<video_id>/*.jpg` (+ optional `Annotations/`)."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from fffvdi.data.masks import MaskGenerator
from fffvdi.errors import ConfigError, InputError
from fffvdi.io.video import list_images, natural_key, read_id_list

logger = logging.getLogger(__name__)

FRAME_EXTS = (".jpg", ".jpeg")
# data.resize: area = OpenCV INTER_AREA on OpenCV-decoded frames (our default); bicubic = Pillow's bicubic on
# Pillow-decoded frames, the release's `Image.open(path).resize((W, H))` (Pillow's default filter for RGB).
RESIZE_METHODS = ("area", "bicubic")
LAYOUT = "ROOT/JPEGImages/<video_id>/00000.jpg ... (optional ROOT/Annotations/<video_id>/00000.png)"


def read_annotation(path: Path) -> np.ndarray:
    """Object ids `[H, W]` int64 from a palette (P), grayscale (L/I) or colour PNG (colours numbered in order)."""
    with Image.open(path) as img:
        if img.mode in ("P", "L", "I", "I;16"):
            return np.asarray(img).astype(np.int64)
        rgb = np.asarray(img.convert("RGB"))  # [H, W, 3]
    colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    nonblack = colours.any(axis=1)
    ids = np.where(nonblack, np.cumsum(nonblack), 0)  # black stays 0, every other colour gets its own id
    return ids[inverse.reshape(-1)].reshape(rgb.shape[:2])


def _read_bicubic(path: Path, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 `[H, W, 3]`: the frame decoded and resized by Pillow (bicubic), as the release loads frames."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB").resize((size[1], size[0]), Image.BICUBIC))
    except OSError as err:  # Pillow's UnidentifiedImageError and truncated-file errors are OSErrors
        raise InputError(f"cannot read frame {path} ({err}); re-extract it as a valid JPEG") from None


def _stride_range(frame_stride: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Normalise `frame_stride` (int or inclusive [lo, hi]) to a (lo, hi) pair."""
    lo, hi = (frame_stride, frame_stride) if isinstance(frame_stride, int) else tuple(frame_stride)
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ConfigError(f"frame_stride={frame_stride!r} must be an int >= 1 or a range [lo, hi] with 1 <= lo <= hi")
    return lo, hi


class VideoClipDataset(torch.utils.data.Dataset):
    """Random clips of `num_frames` frames with hole masks; deterministic given (seed, epoch, index)."""

    def __init__(
        self,
        root: str | Path,
        num_frames: int = 25,
        frame_stride: int | tuple[int, int] = 1,
        size: tuple[int, int] = (256, 512),
        hflip_prob: float = 0.5,
        reverse_prob: float = 0.0,
        masks: MaskGenerator | Mapping[str, Any] | None = None,
        seed: int = 0,
        video_list: str | Path | None = None,
        samples_per_epoch: int | None = None,
        resize: str = "area",
    ) -> None:
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ConfigError(f"num_frames={num_frames!r} must be a positive int")
        if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
            raise ConfigError(f"size={size!r} must be (height, width) positive ints, e.g. (256, 512)")
        for name, p in (("hflip_prob", hflip_prob), ("reverse_prob", reverse_prob)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name}={p} must lie in [0, 1]")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ConfigError(f"samples_per_epoch={samples_per_epoch} must be >= 1 or null")
        if resize not in RESIZE_METHODS:
            raise ConfigError(f"resize={resize!r} is unknown; use one of {', '.join(RESIZE_METHODS)}")
        self.root = Path(root)
        self.num_frames = num_frames
        self.stride_range = _stride_range(frame_stride)
        self.size = (int(size[0]), int(size[1]))
        self.hflip_prob = float(hflip_prob)
        self.reverse_prob = float(reverse_prob)
        self.resize = resize
        if not isinstance(masks, MaskGenerator):
            known = ("probs", "rectangles", "blobs", "objects", "official", "min_area", "max_tries")
            unknown = sorted(set(masks or {}) - set(known))
            if unknown:
                raise ConfigError(f"masks has unknown keys {unknown}; use keys from {list(known)}")
            masks = MaskGenerator(**dict(masks or {}))
        self.masks = masks
        self.seed = int(seed)
        self.epoch = 0
        self.samples_per_epoch = samples_per_epoch
        self.videos, self.num_skipped = self._scan(video_list)

    def _scan(self, video_list: str | Path | None) -> tuple[list[tuple[str, list[Path]]], int]:
        """Find videos with at least one clip's worth of frames; count the rest."""
        image_dir = self.root / "JPEGImages"
        if not image_dir.is_dir():
            raise InputError(f"dataset root {self.root} has no JPEGImages/ folder; expected layout {LAYOUT}")
        if video_list is not None:
            list_path = Path(video_list)
            ids = read_id_list(list_path)
            missing = [v for v in ids if not (image_dir / v).is_dir()]
            if missing:
                raise InputError(f"video_list {list_path} names {len(missing)} videos missing under {image_dir}, e.g. {missing[0]!r}")
        else:
            ids = sorted((p.name for p in image_dir.iterdir() if p.is_dir()), key=natural_key)
        min_len = (self.num_frames - 1) * self.stride_range[0] + 1
        videos, skipped = [], []
        for vid in ids:
            frames = [p for p in list_images(image_dir / vid) if p.suffix.lower() in FRAME_EXTS]  # JPEGs only
            if not frames:
                continue
            (videos if len(frames) >= min_len else skipped).append((vid, frames))
        if skipped:
            logger.info("skipped %d of %d videos shorter than %d frames under %s", len(skipped), len(ids), min_len, image_dir)
        if not videos:
            raise InputError(
                f"no video under {image_dir} has >= {min_len} .jpg frames ({len(skipped)} shorter ones skipped); "
                f"expected layout {LAYOUT}, or lower num_frames/frame_stride"
            )
        return videos, len(skipped)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch so each epoch draws new clips while staying reproducible."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch if self.samples_per_epoch is not None else len(self.videos)

    def _load_annotations(self, vid: str, frames: list[Path]) -> np.ndarray | None:
        """Object ids `[F, H, W]` resized with nearest, or None unless every frame has an annotation."""
        ann_dir = self.root / "Annotations" / vid
        paths = [ann_dir / f"{p.stem}.png" for p in frames]
        if not all(p.is_file() for p in paths):
            return None
        h, w = self.size
        return np.stack(
            [cv2.resize(read_annotation(p).astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST) for p in paths]
        )

    def _load_frames(self, frames: list[Path]) -> np.ndarray:
        """RGB uint8 `[F, H, W, 3]` at the configured size, resized by the configured method."""
        h, w = self.size
        out = np.empty((len(frames), h, w, 3), np.uint8)
        for i, path in enumerate(frames):
            if self.resize == "bicubic":
                out[i] = _read_bicubic(path, (h, w))
                continue
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"cannot read frame {path}; re-extract it as a valid JPEG")
            out[i] = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        # Draw every random number in a fixed order so toggling a probability changes only its own effect.
        vid_idx = int(rng.integers(len(self.videos))) if self.samples_per_epoch is not None else index
        vid, paths = self.videos[vid_idx]
        lo, hi = self.stride_range
        if self.num_frames > 1:
            hi = min(hi, (len(paths) - 1) // (self.num_frames - 1))  # largest stride that still fits; >= lo
        stride = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, len(paths) - (self.num_frames - 1) * stride))
        flip, reverse = rng.uniform() < self.hflip_prob, rng.uniform() < self.reverse_prob
        clip_paths = paths[start : start + (self.num_frames - 1) * stride + 1 : stride]

        frames = self._load_frames(clip_paths)  # [F, H, W, 3]
        ann = self._load_annotations(vid, clip_paths) if self.masks.uses_objects else None
        masks = self.masks(self.num_frames, self.size[0], self.size[1], rng, annotations=ann)  # [F, 1, H, W]

        frames_t = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [F, 3, H, W] in [-1, 1]
        masks_t = torch.from_numpy(np.ascontiguousarray(masks)).float()
        if flip:
            frames_t, masks_t = frames_t.flip(-1), masks_t.flip(-1)
        if reverse:
            frames_t, masks_t = frames_t.flip(0), masks_t.flip(0)
        return {
            "frames": frames_t.contiguous(),
            "masks": masks_t.contiguous(),
            "video_id": vid,
            "start": start,
            "stride": stride,
        }
