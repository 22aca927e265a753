"""Write the demo clip in assets/demo/: `python scripts/make_demo.py [--out assets/demo]`.

A panning synthetic texture with a moving ellipse (frames/*.jpg) and the ellipse's masks
(masks/*.png): an object-removal case whose hidden background is revealed by the motion,
made here so it can be redistributed freely.
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


from fffvdi.data.synthetic import render_video


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="assets/demo", help="output folder (frames/ and masks/)")
    parser.add_argument("--frames", type=int, default=40, help="number of frames")
    parser.add_argument("--size", default="240x432", help="HxW")
    parser.add_argument("--seed", type=int, default=16, help="scene seed (16: the motion reveals 97 percent of the hidden background)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo")
    args = parser.parse_args()
    out = Path(args.out)
    if (out / "frames").exists() and not args.overwrite:
        print(f"error: {out / 'frames'} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    h, w = (int(v) for v in args.size.lower().split("x"))
    frames, ids, _ = render_video(args.frames, h, w, np.random.default_rng(args.seed))
    for sub in ("frames", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for t in range(args.frames):
        cv2.imwrite(str(out / "frames" / f"{t:05d}.jpg"), cv2.cvtColor(frames[t], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(out / "masks" / f"{t:05d}.png"), ids[t] * 255)
    print(f"demo written to {out}: {args.frames} frames {w}x{h}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
