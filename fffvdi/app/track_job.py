"""Subprocess of the web app's tracking step: `python -m fffvdi.app.track_job --frames DIR --annotation PNG
--frame K --output DIR [--tracker flow|sam2] [--sam2 ID]`; masks PNGs + masks_preview.mp4, or one `error:` line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from fffvdi.errors import FFFVDIError, InputError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", required=True, help="PNG frames folder of the clip")
    p.add_argument("--annotation", required=True, help="mask PNG (white = object) drawn on frame --frame")
    p.add_argument("--frame", type=int, required=True, help="index of the annotated frame")
    p.add_argument("--output", required=True, help="folder for the tracked masks (must not exist)")
    p.add_argument("--fps", type=float, default=24.0, help="fps of masks_preview.mp4")
    p.add_argument("--tracker", default="flow", help="flow (weight-free) or sam2")
    p.add_argument("--sam2", default=None, help="SAM 2 hub id or local folder (with --tracker sam2)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    """Track the annotation through the clip and save the masks; InputError on an empty annotation or result."""
    from fffvdi.io import load_video

    video = load_video(args.frames)
    annotation = cv2.imread(args.annotation, cv2.IMREAD_GRAYSCALE)
    if annotation is None:
        raise InputError(f"annotation {args.annotation} is not an image; draw the box or brush again")
    annotation = annotation > 127  # bool [H, W]
    if not annotation.any():
        raise InputError("the annotation is empty; draw a box or brush over the object to remove")
    if annotation.shape != video.frames.shape[1:3]:
        raise InputError(f"annotation is {annotation.shape} but frames are {video.frames.shape[1:3]}; draw it again")
    if not 0 <= args.frame < len(video):
        raise InputError(f"annotated frame {args.frame} is outside the clip's {len(video)} frames; pick another frame")
    from fffvdi.tracking import save_masks, track_masks  # after the checks: a bad annotation fails fast

    masks = track_masks(video.frames, annotation, args.frame, tracker=args.tracker, sam2=args.sam2, progress=True)
    if not np.asarray(masks).any():
        raise InputError("tracking lost the object on every frame (empty masks); draw a larger box or a brush mask")
    return save_masks(masks, video.names, args.output, frames=video.frames, fps=args.fps)


def main(argv=None) -> int:
    try:
        out = run(parse_args(argv))
    except FFFVDIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
