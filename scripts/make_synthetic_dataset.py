"""Write a small synthetic dataset (panning texture + moving object per video) for training or evaluation.

Training layout (YouTube-VOS: JPEGImages/ + Annotations/), for scripts/train.py:
  python scripts/make_synthetic_dataset.py data/synthetic --videos 4 --frames 30 --size 64x128 --seed 0
Evaluation layout (DAVIS test: JPEGImages/ + test_masks/, moving and stationary rectangles), for scripts/evaluate.py:
  python scripts/make_synthetic_dataset.py data/synthetic_eval --eval --videos 4 --frames 30 --size 240x432
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="output folder (gets JPEGImages/, Annotations/ or test_masks/, synthetic_meta.json)")
    parser.add_argument("--eval", action="store_true",
                        help="write the evaluation layout scripts/evaluate.py reads (test_masks/: a rectangle per frame, "
                             "moving in even-numbered videos, stationary in odd ones) instead of Annotations/")
    parser.add_argument("--videos", type=int, default=4, help="number of videos (default 4)")
    parser.add_argument("--frames", type=int, default=30, help="frames per full-length video (default 30)")
    parser.add_argument("--size", type=parse_size, default=(64, 128), help="frame size HxW (default 64x128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--short", type=int, default=None,
                        help="how many videos are short, frames//3 (default 1; 0 with --eval)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in out_dir")
    args = parser.parse_args(argv)
    short = args.short if args.short is not None else (0 if args.eval else 1)  # evaluation sets: every video full length
    start = time.perf_counter()
    try:
        meta = make_synthetic_dataset(
            args.out_dir, args.videos, args.frames, args.size, args.seed, num_short=short, overwrite=args.overwrite,
            layout="eval" if args.eval else "train",
        )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lengths = [v["num_frames"] for v in meta["videos"].values()]
    print(f"wrote {len(lengths)} videos ({sum(lengths)} frames) to {args.out_dir} in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
