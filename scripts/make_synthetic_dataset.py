"""Write a small synthetic dataset in the YouTube-VOS layout (panning texture + moving object per video).

Example: python scripts/make_synthetic_dataset.py data/synthetic --videos 4 --frames 30 --size 64x128 --seed 0
"""
from __future__ import annotations

import argparse
import sys
import time


from fffvdi.data.synthetic import make_synthetic_dataset
from fffvdi.errors import InputError


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r} must look like HxW, e.g. 64x128") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output folder (gets JPEGImages/, Annotations/, synthetic_meta.json)")
    parser.add_argument("--videos", type=int, default=4, help="number of videos (default 4)")
    parser.add_argument("--frames", type=int, default=30, help="frames per full-length video (default 30)")
    parser.add_argument("--size", type=parse_size, default=(64, 128), help="frame size HxW (default 64x128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--short", type=int, default=1, help="how many videos are short, frames//3 (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in out_dir")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        meta = make_synthetic_dataset(
            args.out_dir, args.videos, args.frames, args.size, args.seed, num_short=args.short, overwrite=args.overwrite
        )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lengths = [v["num_frames"] for v in meta["videos"].values()]
    print(f"wrote {len(lengths)} videos ({sum(lengths)} frames) to {args.out_dir} in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
