"""`track_masks`: one annotation on one frame -> a mask for every frame, by the flow tracker or SAM 2."""
from __future__ import annotations

import numpy as np

from fffvdi.errors import InputError
from fffvdi.tracking.flow_tracker import track_flow
from fffvdi.tracking.sam2 import track_sam2

TRACKERS = ("flow", "sam2")
DEFAULT_SAM2 = "facebook/sam2.1-hiera-tiny"


def check_inputs(frames: np.ndarray, annotation: np.ndarray, frame: int) -> None:
    """InputError unless frames are uint8 [T, H, W, 3], the annotation a non-empty [H, W] mask and `frame` in range."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be uint8 [T, H, W, 3], got {getattr(frames, 'dtype', type(frames))} {np.shape(frames)}")
    n, h, w = frames.shape[:3]
    if np.shape(annotation) != (h, w):
        raise InputError(f"annotation is {np.shape(annotation)} but the frames are {h}x{w} (HxW); draw it on a frame of the video")
    if not 0 <= int(frame) < n:
        raise InputError(f"annotated frame {frame} is out of range: the video has {n} frames (0..{n - 1}); pass --frame in range")
    if not np.asarray(annotation).any():
        raise InputError("annotation is empty; mark the object with a box or a mask with white pixels")


def track_masks(
    frames: np.ndarray,
    annotation: np.ndarray,
    frame: int,
    tracker: str = "flow",
    sam2: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Masks bool [T, H, W] of the object annotated (bool [H, W]) on `frame` of `frames` uint8 [T, H, W, 3].

    `tracker`: 'flow' (weight-free, default) or 'sam2' (`sam2`: hub id or local folder, default
    facebook/sam2.1-hiera-tiny). An annotation that is exactly a filled rectangle is taken as a box
    around the object and converted to the object's mask first.
    """
    if tracker not in TRACKERS:
        raise InputError(f"tracker {tracker!r} is unknown; use one of {', '.join(TRACKERS)}")
    check_inputs(frames, annotation, frame)
    annotation = np.asarray(annotation).astype(bool)
    if tracker == "sam2":
        return track_sam2(frames, annotation, int(frame), sam2 or DEFAULT_SAM2, progress=progress)

    return track_flow(frames, annotation, int(frame), progress=progress)
