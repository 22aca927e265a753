"""Writing tracked masks: one PNG per frame in the input's names (255 = region to fill) and an overlay preview."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from fffvdi.errors import InputError
from fffvdi.io.output import png_name, prepare_output_dir, tint, write_video

PREVIEW_NAME = "masks_preview.mp4"


def save_masks(
    masks: np.ndarray,
    names: list[str],
    out_dir: str | Path,
    frames: np.ndarray | None = None,
    fps: float = 24.0,
    overwrite: bool = False,
) -> Path:
    """Write masks bool [T, H, W] as `<out_dir>/<stem>.png` (255 = hole) for the input frame `names`, plus
    `masks_preview.mp4` (the frames uint8 [T, H, W, 3] with the masks tinted) when `frames` is given.

    Refuses a non-empty `out_dir` unless `overwrite`; returns `out_dir`.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InputError(f"masks must be [T, H, W], got shape {masks.shape}")
    if len(names) != len(masks):
        raise InputError(f"{len(masks)} masks but {len(names)} frame names; pass one name per frame")
    files = [png_name(n) for n in names]
    if len(set(files)) != len(files):
        dup = next(f for f in files if files.count(f) > 1)
        raise InputError(f"two input frames map to mask {dup}; rename the input frames so their stems differ")
    if frames is not None and (frames.shape[:3] != masks.shape or frames.dtype != np.uint8):
        raise InputError(f"preview frames {frames.dtype} {frames.shape} do not match masks {masks.shape}; pass uint8 [T, H, W, 3]")
    out = prepare_output_dir(out_dir, overwrite)
    names_set = set(files)
    stale = sorted(p.name for p in out.glob("*.png") if p.name not in names_set)
    for mask, name in zip(masks, files):
        if not cv2.imwrite(str(out / name), np.where(mask, 255, 0).astype(np.uint8)):
            raise InputError(f"cannot write {out / name}; check that the folder is writable and has space")
    if frames is not None:
        write_video(out / PREVIEW_NAME, tint(frames, masks.astype(bool)), fps)
    if stale:
        warnings.warn(f"{out} also holds {len(stale)} PNGs of an earlier run (e.g. {stale[0]}); delete them", UserWarning, stacklevel=2)
    return out
