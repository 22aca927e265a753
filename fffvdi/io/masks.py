"""Reading masks (1 = region to inpaint) from a folder, one image for all frames, or a video; lazily."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from fffvdi.errors import ConfigError, InputError
from fffvdi.io.images import check_unique_stems
from fffvdi.io.video import IMAGE_EXTS, VIDEO_EXTS, VideoSource, check_exists, list_images, read_image

RESIZE_MODES = ("nearest", "stretch", "error")  # nearest: same aspect only; stretch: any aspect; error: no resize
ASPECT_TOLERANCE = 0.01  # a mask whose aspect ratio differs more than this (or a pixel) was drawn for other frames
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def mask_values(img: np.ndarray) -> np.ndarray:
    """Per-pixel mask strength 0..255 from gray, RGB/BGR (max channel) or RGBA (alpha if not opaque)."""
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if img.ndim == 2:
        return img
    c = img.shape[2]
    if c in (2, 4):
        alpha = img[..., c - 1]
        if alpha.min() < 255:  # real transparency carries the mask; an opaque alpha carries nothing
            return alpha
        img = img[..., : c - 1]
    return img.max(axis=2)  # any channel above threshold marks a hole


def binarize(img: np.ndarray, threshold: int = 127) -> np.ndarray:
    """uint8 [H, W] in {0, 1}: 1 where the mask strength is > threshold."""
    return (mask_values(img) > threshold).astype(np.uint8)


def dilate_mask(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Dilate a {0, 1} uint8 [H, W] mask with a 3x3 cross kernel `iterations` times (0: unchanged)."""
    if iterations <= 0:
        return mask
    return cv2.dilate(mask, _CROSS, iterations=iterations)


MASK_MODES = ("mask", "box")  # box: each mask replaced by its bounding box (the official validation does this)


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """The filled bounding box of a binary mask `[H, W]` (an empty mask stays empty)."""
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    if ys.size:
        out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
    return out


class MaskSource:
    """Lazy masks aligned to a video's frames; `read(start, stop)` returns uint8 [n, H, W] in {0, 1}.

    `path` is a folder of images (one per frame, natural order), one image (used for every frame)
    or a video file. A mask whose size differs from `frame_size` (H, W) is resized with nearest
    neighbour if its aspect ratio is the frame's (resize="nearest"; another aspect is an error),
    whatever its aspect (resize="stretch"), or rejected (resize="error"); dilation follows resizing.
    """

    def __init__(
        self,
        path: str | Path,
        num_frames: int,
        frame_size: tuple[int, int],
        threshold: int = 127,
        dilate: int = 0,
        resize: str = "nearest",
        mode: str = "mask",
    ):
        self.path = Path(path)
        self.num_frames, self.frame_size = int(num_frames), (int(frame_size[0]), int(frame_size[1]))
        if not 0 <= threshold < 255:
            raise ConfigError(f"mask threshold {threshold} must be in [0, 255); a hole is value > threshold")
        if int(dilate) != dilate or dilate < 0:
            raise ConfigError(f"mask dilate {dilate} must be an integer >= 0 (iterations of a 3x3 cross)")
        if resize not in RESIZE_MODES:
            raise ConfigError(f"mask.resize={resize!r} is unknown; use one of {', '.join(RESIZE_MODES)}")
        if mode not in MASK_MODES:
            raise ConfigError(f"mask.mode={mode!r} is unknown; use one of {', '.join(MASK_MODES)}")
        self.threshold, self.dilate, self.resize, self.mode = threshold, int(dilate), resize, mode
        check_exists(self.path, "mask")

        self._files: list[Path] | None = None
        self._video: VideoSource | None = None
        if self.path.is_dir():
            self._files = list_images(self.path)
            if not self._files:
                raise InputError(
                    f"no masks in folder {self.path}; it needs {'/'.join(e[1:] for e in IMAGE_EXTS)} images"
                )
            check_unique_stems(self._files, "mask")  # else counted twice: "40 masks but the video has 80 frames"
            count = len(self._files)
        elif self.path.suffix.lower() in IMAGE_EXTS:
            self._files, count = [self.path], 1
        elif self.path.suffix.lower() in VIDEO_EXTS:
            self._video = VideoSource(self.path)
            count = len(self._video)
        else:
            raise InputError(
                f"unsupported mask {self.path}: expected a folder, a {'/'.join(IMAGE_EXTS)} image "
                f"or a {'/'.join(VIDEO_EXTS)} video"
            )
        if count not in (1, self.num_frames):
            raise InputError(
                f"mask {self.path} has {count} masks but the video has {self.num_frames} frames; "
                "give one mask per frame or a single mask for all frames"
            )
        self.count = count  # masks stored at `path`; 1 means broadcast to every frame
        self._single: np.ndarray | None = None
        self._empty: bool | None = None
        self._all_hole: bool | None = None

    @classmethod
    def for_video(cls, path: str | Path, video: VideoSource, **kwargs) -> "MaskSource":
        """Masks sized and counted to match `video`."""
        return cls(path, len(video), video.size, **kwargs)

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return f"MaskSource({str(self.path)!r}, frames={self.num_frames}, stored={self.count})"

    def _fit(self, raw: np.ndarray, where: Path) -> np.ndarray:
        """Binarize, resize to the frame size and dilate one raw mask image."""
        mask = binarize(raw, self.threshold)
        h, w = self.frame_size
        if mask.shape != (h, w):
            mh, mw = mask.shape
            if self.resize == "error":
                raise InputError(
                    f"mask {where} is {mh}x{mw} (HxW) but frames are {h}x{w}; "
                    "resize the masks to the frame size or pass mask.resize=nearest"
                )
            if self.resize == "nearest" and not same_aspect((mh, mw), (h, w)):
                raise InputError(
                    f"mask {where} is {mh}x{mw} (HxW) but frames are {h}x{w}, another aspect ratio "
                    f"({mw / mh:.3g} vs {w / h:.3g}); draw the masks at the frame size, or pass mask.resize=stretch "
                    "to stretch them anyway"
                )
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)  # same as PIL NEAREST
        if self.mode == "box":
            mask = bounding_box(mask)
        return dilate_mask(mask, self.dilate)

    def _stored(self, start: int, stop: int) -> list[np.ndarray]:
        """Masks [start, stop) as stored at `path` (indices into the stored masks)."""
        if self._files is not None:
            return [self._fit(read_image(f, cv2.IMREAD_UNCHANGED), f) for f in self._files[start:stop]]
        frames = self._video.read(start, stop)  # uint8 [n, H, W, 3]
        return [self._fit(f, self.path) for f in frames]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Masks for frames [start, stop) as uint8 [n, H, W] in {0, 1}."""
        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(f"mask range [{start}, {stop}) outside [0, {self.num_frames}) of {self.path}")
        if self.count == 1:
            if self._single is None:
                self._single = self._stored(0, 1)[0]
            return np.repeat(self._single[None], stop - start, axis=0)
        if stop == start:
            return np.zeros((0, *self.frame_size), np.uint8)
        return np.stack(self._stored(start, stop))

    def is_empty(self, chunk: int = 64) -> bool:
        """True if no frame has a hole; warns once (UserWarning) naming the path when so.

        Cost: one read of every stored mask (a single broadcast mask: one image), `chunk` at a
        time so memory stays bounded; the answer is cached.
        """
        if self._empty is None:
            self._scan(chunk)
            if self._empty:
                self._warn_empty()
        return self._empty

    def check(self, chunk: int = 64) -> None:
        """Read every mask once (any unreadable or misfit one raises now, before any work); warn if no frame has
        a hole; InputError if every pixel of every frame is a hole (no visible content to inpaint from)."""
        self.is_empty(chunk)
        if self._all_hole:
            raise InputError(
                f"mask {self.path} covers every pixel of every frame (after threshold {self.threshold} and dilate "
                f"{self.dilate}), so no frame shows anything to inpaint from; white (> threshold) must mark only the "
                "region to remove (invert a mask drawn the other way round, or lower mask.dilate)"
            )

    def _scan(self, chunk: int) -> None:
        """One pass over every stored mask: is any pixel a hole, is any pixel visible."""
        self._empty, self._all_hole = True, True
        span = 1 if self.count == 1 else self.num_frames
        for start in range(0, span, chunk):
            block = self.read(start, min(start + chunk, span))
            self._empty = self._empty and not block.any()
            self._all_hole = self._all_hole and bool(block.all())

    def _warn_empty(self) -> None:
        warnings.warn(
            f"mask {self.path} marks no pixel in any frame (threshold {self.threshold}); "
            "the output will equal the input",
            UserWarning,
            stacklevel=3,
        )

    def close(self) -> None:
        """Release a mask video's decoder."""
        if self._video is not None:
            self._video.close()


def same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True if sizes (H, W) `a` and `b` have the same aspect ratio, within 1% or one pixel."""
    (ah, aw), (bh, bw) = a, b
    return abs(ah * bw / aw - bh) <= max(ASPECT_TOLERANCE * bh, 1.0) and abs(aw * bh / ah - bw) <= max(
        ASPECT_TOLERANCE * bw, 1.0
    )


def load_masks(
    path: str | Path,
    num_frames: int,
    frame_size: tuple[int, int],
    threshold: int = 127,
    dilate: int = 0,
    resize: str = "nearest",
    mode: str = "mask",
) -> np.ndarray:
    """All masks as uint8 [F, H, W] in {0, 1}; warns if every frame is empty."""
    src = MaskSource(path, num_frames, frame_size, threshold=threshold, dilate=dilate, resize=resize, mode=mode)
    try:
        masks = src.read(0, num_frames)
        src._empty = not masks.any()
        if src._empty:
            src._warn_empty()
        return masks
    finally:
        src.close()
