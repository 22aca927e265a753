"""Evaluation datasets (DAVIS / YouTube-VOS test layout) and result folders, at the protocol's size.

Layout: `ROOT/JPEGImages/<video>/*.jpg` (or ProPainter's pre-resized `ROOT/JPEGImages_432_240/`)
and `ROOT/test_masks/<video>/*.png`, one mask per frame (or one for all), both natural-sorted.
Videos are those with a `test_masks/` folder (ProPainter's `TestDataset` lists the mask root) or
the ids in a list file.

Protocol (ProPainter `core/dataset.py::TestDataset`, E2FGVI likewise): RGB frames resized to
432x240 (W x H) with `cv2.resize(..., INTER_LINEAR)` whatever their aspect ratio; masks resized to the same
size with nearest neighbour (they must fit the source frames' aspect ratio or be at 432x240 already),
binarised `> 0`, dilated with a 3x3 cross 4 times. Both projects distribute the test sets already
at 432x240, so their resize is a no-op; ours matters only for full-resolution copies. Differences:
we binarise before the nearest resize (the two commute) and take the max over colour channels
where they convert to PIL 'L' (luma); for the grey 0/255 test masks the results are identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from fffvdi.errors import InputError
from fffvdi.io import MaskSource, list_images, natural_key
from fffvdi.io.images import check_image_sizes, check_unique_stems
from fffvdi.io.masks import same_aspect
from fffvdi.io.video import read_id_list, read_image

FRAME_DIRS = ("JPEGImages", "JPEGImages_432_240")  # first that exists wins
MASK_DIR = "test_masks"
DEFAULT_SIZE = (432, 240)  # (W, H), the field's evaluation size
DEFAULT_DILATE = 4  # iterations of the 3x3 cross


@dataclass
class EvalVideo:
    """One test video at the evaluation size: ground truth, hole masks and frame names."""

    name: str
    frames: np.ndarray  # uint8 [F, H, W, 3] RGB ground truth
    masks: np.ndarray  # uint8 [F, H, W] in {0, 1}, 1 = hole (dilated)
    frame_names: list[str]


def parse_size(text: str) -> Optional[tuple[int, int]]:
    """'432x240' -> (W, H); 'native' -> None (keep each video's own size)."""
    if text.strip().lower() == "native":
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {text!r} must be WIDTHxHEIGHT (e.g. 432x240) or 'native'") from None
    if w < 1 or h < 1:
        raise InputError(f"--size {text!r} must be positive, e.g. 432x240")
    return w, h


def frames_root(root: Path) -> Path:
    """The frames folder of a dataset root (JPEGImages, else JPEGImages_432_240)."""
    if not root.is_dir():
        raise InputError(f"dataset root not found: {root}; pass the folder holding JPEGImages/ and test_masks/")
    for sub in FRAME_DIRS:
        if (root / sub).is_dir():
            return root / sub
    raise InputError(f"no frames folder in {root}: expected {root / FRAME_DIRS[0]}/<video>/*.jpg")


def list_videos(root: str | Path, video_list: str | Path | None = None) -> list[str]:
    """Video ids to evaluate: the lines of `video_list` (blank and '#' lines ignored) or every test_masks/ folder."""
    root = Path(root)
    frames_dir, masks_dir = frames_root(root), root / MASK_DIR
    if not masks_dir.is_dir():
        raise InputError(f"no masks folder {masks_dir}; the test layout needs {MASK_DIR}/<video>/*.png")
    if video_list is not None:
        path = Path(video_list)
        names = read_id_list(path)
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise InputError(f"video list {path} names {dup!r} twice; list each video once")
    else:
        names = sorted((p.name for p in masks_dir.iterdir() if p.is_dir()), key=natural_key)
    if not names:
        raise InputError(f"no videos to evaluate under {masks_dir}; check --dataset-root / --video-list")
    for name in names:
        for folder in (frames_dir / name, masks_dir / name):
            if not folder.is_dir():
                raise InputError(f"video {name!r}: folder {folder} is missing; fix the dataset or the video list")
    return names


def _resize_rgb(img: np.ndarray, size: Optional[tuple[int, int]]) -> np.ndarray:
    """Resize an RGB frame to (W, H) with bilinear interpolation (cv2.INTER_LINEAR, as ProPainter)."""
    if size is None or (img.shape[1], img.shape[0]) == tuple(size):
        return img
    return cv2.resize(img, tuple(size), interpolation=cv2.INTER_LINEAR)


def _check_mask_size(name: str, folder: Path, native: tuple[int, int], target: tuple[int, int]) -> None:
    """Masks must fit the source frames (same aspect ratio) or be at the evaluation size already (ProPainter's
    432x240 test_masks next to full-resolution DAVIS frames); anything else was drawn for other frames."""
    files = list_images(folder) if folder.is_dir() else []
    if not files:
        return  # MaskSource names the problem
    mh, mw = check_image_sizes(files, "mask")
    if (mh, mw) == target or same_aspect((mh, mw), native):
        return
    raise InputError(
        f"video {name!r}: mask {files[0]} is {mh}x{mw} (HxW) but its frames are {native[0]}x{native[1]}, another "
        f"aspect ratio; give masks drawn for these frames (same size as the frames, or {target[1]}x{target[0]} WxH)"
    )


def load_eval_video(
    root: str | Path, name: str, size: Optional[tuple[int, int]] = DEFAULT_SIZE, dilate: int = DEFAULT_DILATE
) -> EvalVideo:
    """Read one test video: frames resized to `size` (W, H), masks resized alike (nearest), `> 0`, dilated."""
    root = Path(root)
    files = list_images(frames_root(root) / name)
    if not files:
        raise InputError(f"video {name!r} has no frames in {frames_root(root) / name}; expected *.jpg/*.png")
    check_unique_stems(files, "frame")
    native = check_image_sizes(files, "frame")  # (H, W) before resizing; every frame's header, before any decoding
    target = native if size is None else (size[1], size[0])
    _check_mask_size(name, root / MASK_DIR / name, native, target)
    frames = np.stack([_resize_rgb(cv2.cvtColor(read_image(f), cv2.COLOR_BGR2RGB), size) for f in files])
    # stretch: masks follow the frames to the evaluation size even when that changes the aspect ratio (the protocol
    # resizes both to 432x240); _check_mask_size has already refused masks drawn for other frames
    masks = MaskSource(root / MASK_DIR / name, len(files), target, threshold=0, dilate=dilate, resize="stretch")
    try:
        mask_arr = masks.read(0, len(files))
    finally:
        masks.close()
    return EvalVideo(name, frames, mask_arr, [f.name for f in files])


def result_folder(results_root: Path, name: str) -> Path:
    """Where a video's result frames are: `DIR/<video>/`, or `DIR/<video>/frames/` (scripts/inference.py layout)."""
    folder = results_root / name
    if folder.is_dir() and not list_images(folder) and (folder / "frames").is_dir():
        return folder / "frames"
    return folder


def read_result_frames(results_root: str | Path, video: EvalVideo) -> np.ndarray:
    """A video's result frames uint8 `[F, H, W, 3]`, matched to the ground truth by file stem, else by order."""
    folder = result_folder(Path(results_root), video.name)
    if not folder.is_dir():
        raise InputError(f"no results for video {video.name!r}: {folder} is missing; produce it or drop the video from the list")
    files = list_images(folder)
    check_unique_stems(files, "result")  # else one stem would silently shadow the other
    by_stem = {f.stem: f for f in files}
    wanted = [Path(n).stem for n in video.frame_names]
    if all(s in by_stem for s in wanted):
        files = [by_stem[s] for s in wanted]  # extra files (e.g. a mask preview) are ignored
    elif len(files) != len(wanted):
        raise InputError(
            f"results {folder} hold {len(files)} frames but video {video.name!r} has {len(wanted)}, and names do not "
            "match the ground truth's; write one frame per input frame"
        )
    out = np.stack([cv2.cvtColor(read_image(f), cv2.COLOR_BGR2RGB) for f in files])
    if out.shape != video.frames.shape:
        raise InputError(
            f"results {folder} are {out.shape[2]}x{out.shape[1]} (WxH) but the evaluation size is "
            f"{video.frames.shape[2]}x{video.frames.shape[1]}; pass the matching --size or resize the results"
        )
    return out
