"""Masks from one annotation: `python scripts/make_masks.py --video V --box x,y,w,h --frame K --output DIR`.

The object marked on frame K (a box, or `--mask-image M.png` with the object in white) is tracked
through the whole video, forward and backward. DIR gets one mask PNG per frame, named after the
input frames (255 = region to inpaint, ready for `scripts/inference.py --mask DIR`), and
masks_preview.mp4 with the masks over the video. `--tracker flow` (default) needs no weights;
`--tracker sam2` uses SAM 2 (`--sam2` hub id or local folder).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fffvdi.errors import FFFVDIError, InputError
from fffvdi.tracking.track import TRACKERS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="frames folder (jpg/png) or video file (mp4/avi/mov)")
    ann = p.add_mutually_exclusive_group(required=True)
    ann.add_argument("--box", help="box around the object on --frame: x,y,w,h in pixels (x, y = top-left corner)")
    ann.add_argument("--mask-image", help="mask of the object on --frame (white = object), any size of the same aspect")
    p.add_argument("--frame", type=int, default=0, help="index of the annotated frame (0 = first; default 0)")
    p.add_argument("--output", required=True, help="folder for the mask PNGs and masks_preview.mp4")
    p.add_argument("--tracker", choices=TRACKERS, default="flow",
                   help="flow: optical-flow tracker, no weights (default); sam2: SAM 2 video model")
    p.add_argument("--sam2", default=None, help="SAM 2 hub id or local folder (default facebook/sam2.1-hiera-tiny)")
    p.add_argument("--fps", type=float, default=None, help="fps of a frames-folder input, for the preview (default 24)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    """Check everything, track, write; returns the output folder."""
    from fffvdi.io import load_video
    from fffvdi.tracking import box_mask, parse_box, read_annotation, save_masks, track_masks

    out = Path(args.output)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:  # before the (long) tracking
        raise InputError(f"output folder {out} exists; pass --overwrite or choose another --output")
    video = load_video(args.video, args.fps)
    if not 0 <= args.frame < len(video):
        raise InputError(f"--frame {args.frame} is out of range: {args.video} has {len(video)} frames (0..{len(video) - 1})")
    if args.box is not None:
        annotation = box_mask(parse_box(args.box), video.size)
    else:
        annotation = read_annotation(args.mask_image, video.size)
    masks = track_masks(video.frames, annotation, args.frame, tracker=args.tracker, sam2=args.sam2, progress=True)
    if not masks.any():  # SAM 2 can lose the object even on its prompt frame; empty masks would inpaint nothing
        raise InputError("tracking lost the object on every frame (empty masks); mark it with a larger box or a mask")
    return save_masks(masks, video.names, out, frames=video.frames, fps=video.fps, overwrite=args.overwrite)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = run(parse_args(argv))
    except FFFVDIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
