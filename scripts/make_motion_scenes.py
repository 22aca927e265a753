"""Write the real-motion-like evaluation set: `python scripts/make_motion_scenes.py OUT [--frames 40] [--size 240x432]`.

One video per scene of `fffvdi/data/motion_scenes.py` (camera pan / sub-pixel pan / zoom / static camera,
a moving object that stays, a box of 1/8 of the width that is removed) in the layout
`scripts/evaluate.py` reads: `OUT/JPEGImages/<scene>/00000.png` (the ground truth, lossless) and
`OUT/test_masks/<scene>/00000.png` (the box). Reproduces the README's propagate / Telea rows.
"""
import argparse
import sys
from pathlib import Path

import cv2

from fffvdi.data.motion_scenes import SCENES, render_scene


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder (gets JPEGImages/ and test_masks/)")
    p.add_argument("--frames", type=int, default=40, help="frames per scene")
    p.add_argument("--size", default="240x432", help="HxW")
    p.add_argument("--seed", type=int, default=1, help="scene seed")
    p.add_argument("--overwrite", action="store_true", help="replace existing scenes")
    args = p.parse_args(argv)
    out = Path(args.out)
    if (out / "JPEGImages").exists() and not args.overwrite:
        print(f"error: {out / 'JPEGImages'} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    h, w = (int(v) for v in args.size.lower().split("x"))
    for spec in SCENES:
        gt, _, masks = render_scene(spec, args.frames, (h, w), seed=args.seed)
        for sub in ("JPEGImages", "test_masks"):
            (out / sub / spec.name).mkdir(parents=True, exist_ok=True)
        for t in range(args.frames):
            cv2.imwrite(str(out / "JPEGImages" / spec.name / f"{t:05d}.png"), cv2.cvtColor(gt[t], cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(out / "test_masks" / spec.name / f"{t:05d}.png"), masks[t].astype("uint8") * 255)
    print(f"wrote {len(SCENES)} scenes of {args.frames} frames {w}x{h} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
