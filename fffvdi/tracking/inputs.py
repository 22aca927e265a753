"""The mask input of an inference run tracked from one annotation (`--box x,y,w,h` or `--mask ONE.png`, with
`--mask-frame K`): checked before anything is written, tracked (`track_masks`) into OUT/masks/."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from fffvdi.errors import InputError
from fffvdi.io.masks import MaskSource
from fffvdi.io.video import VideoSource, list_images
from fffvdi.tracking.annotation import box_mask, parse_box, read_annotation
from fffvdi.tracking.save import save_masks
from fffvdi.tracking.track import TRACKERS, track_masks


def annotation_from_args(box: Optional[str], mask: Optional[str], frame: Optional[int], tracker: str = "flow",
                         sam2: Optional[str] = None) -> Optional[dict]:
    """{'frame', 'box' | 'image', 'tracker', 'sam2'} from the flags, or None (per-frame masks, as without them).

    `--mask M` without `--mask-frame` keeps its meaning (masks, or one mask for every frame); `--box` alone
    annotates frame 0."""
    if box is None and frame is None:
        return None
    if box is not None and mask is not None:
        raise InputError("pass either --box or --mask with --mask-frame, not both")
    frame = 0 if frame is None else frame
    if frame < 0:
        raise InputError(f"--mask-frame {frame} is negative; pass the index of the annotated frame (0 = first)")
    if box is None:
        if mask is None or not Path(mask).is_file():
            raise InputError(f"--mask-frame {frame} needs --mask ONE_IMAGE (the object in white on frame {frame}) "
                             f"or --box x,y,w,h; {mask} is not an image file")
        return {"frame": frame, "image": str(Path(mask).resolve()), "tracker": tracker, "sam2": sam2}
    return {"frame": frame, "box": list(parse_box(box)), "tracker": tracker, "sam2": sam2}


def seed_mask(annotation: dict, video: VideoSource) -> np.ndarray:
    """bool [H, W]: the annotation on its frame, checked against the video (frame in range, box inside)."""
    frame, size = annotation["frame"], tuple(video.size)
    if frame >= len(video):
        raise InputError(f"--mask-frame {frame} is past the last frame of {video.path} ({len(video)} frames: "
                         f"0..{len(video) - 1})")
    if annotation["tracker"] not in TRACKERS:
        raise InputError(f"--tracker {annotation['tracker']!r} is unknown; use one of {', '.join(TRACKERS)}")
    if "box" in annotation:
        return box_mask(tuple(annotation["box"]), size)
    return read_annotation(annotation["image"], size)


def tracked_mask_source(video: VideoSource, seed: np.ndarray, annotation: dict, folder: Path, reuse: bool,
                        **mask_options) -> MaskSource:
    """Track `seed` over the whole video into `folder` (PNGs in the frames' names + masks_preview.mp4; a complete
    folder is kept when `reuse`, e.g. on --resume) and open it as the run's masks (`mask_options`: MaskSource's)."""
    if not (reuse and folder.is_dir() and len(list_images(folder)) == len(video)):
        frames = video.read(0, len(video))  # uint8 [T, H, W, 3]: the tracker sees the whole clip
        tracked = track_masks(frames, seed, annotation["frame"], tracker=annotation["tracker"],
                              sam2=annotation["sam2"], progress=True)  # bool [T, H, W]
        save_masks(tracked, list(video.names), folder, frames=frames, fps=video.fps, overwrite=True)
    masks = MaskSource.for_video(folder, video, **mask_options)
    masks.check()  # a tracked mask hiding everything is refused as any mask is
    return masks
