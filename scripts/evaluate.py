"""Evaluate video inpainting on DAVIS / YouTube-VOS test sets with the STTN / E2FGVI / ProPainter protocol.

Score existing results:
  python scripts/evaluate.py --dataset-root ROOT --results DIR --output OUT
Run a method, save its frames to OUT/results/<video>/ and score them (resumable):
  python scripts/evaluate.py --dataset-root ROOT --method fffvdi|propagate|telea [--config YAML] [key=value ...] --output OUT

ROOT holds JPEGImages/<video>/*.jpg (or JPEGImages_432_240/) and test_masks/<video>/*.png. Frames are
resized to --size (W x H, default 432x240, bilinear), masks nearest, > 0, dilated (3x3 cross, 4x);
predictions are composited inside the mask. Writes OUT/per_video.csv, OUT/per_frame.csv,
OUT/summary.json and prints a table (E_warp in units of 1e-3). A rerun with the same settings
skips finished videos; different settings in an existing OUT need --overwrite.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings


from fffvdi.errors import FFFVDIError
from fffvdi.evaluation import EVAL_METHODS, EvalSettings, parse_size, run_evaluation


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-root", required=True, help="folder with JPEGImages/ and test_masks/")
    p.add_argument("--video-list", default=None, help="text file, one video id per line (default: every test_masks/ folder)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--results", default=None, help="score this folder of results: DIR/<video>/ frames (png/jpg)")
    mode.add_argument("--method", choices=EVAL_METHODS, default=None, help="run this method on every video")
    p.add_argument("--config", default=None, help="inference YAML for --method (e.g. configs/inference.yaml)")
    p.add_argument("--output", required=True, help="output folder (resumable)")
    p.add_argument("--i3d-weights", default=None, help="i3d_rgb_imagenet.pt for VFID (omitted: VFID skipped)")
    p.add_argument("--size", default="432x240", help="evaluation size WIDTHxHEIGHT, or 'native' (default 432x240)")
    p.add_argument("--mask-dilate", type=int, default=4, help="3x3 cross dilation iterations of the test masks (default 4)")
    p.add_argument("--flow", default="dis", help="flow model for E_warp: dis | raft_large | raft_small (default dis)")
    p.add_argument("--raft-weights", default=None, help="local RAFT state dict for --flow raft_*")
    p.add_argument("--ewarp-flow-source", choices=("gt", "output"), default="gt",
                   help="estimate E_warp's flow/occlusion on the ground truth (Lai et al., default) or on the output")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--device", default="auto", help="device for I3D/LPIPS/RAFT: auto | cpu | cuda")
    p.add_argument("--overwrite", action="store_true", help="recompute everything into an existing --output")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("overrides", nargs="*", help="inference config overrides key=value (with --method)")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """Map parsed arguments onto EvalSettings."""
    return EvalSettings(
        dataset_root=args.dataset_root, output=args.output, video_list=args.video_list, results=args.results,
        method=args.method, config=args.config, overrides=list(args.overrides), i3d_weights=args.i3d_weights,
        size=parse_size(args.size), mask_dilate=args.mask_dilate, flow=args.flow, raft_weights=args.raft_weights,
        ewarp_flow_source=args.ewarp_flow_source, lpips=not args.no_lpips, overwrite=args.overwrite,
        device=args.device, progress=not args.no_progress,
    )


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        outcome = run_evaluation(settings_from_args(parse_args(argv)))
    except FFFVDIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = previous
    print(outcome.table)
    print(f"wrote {outcome.out_dir / 'summary.json'}, per_video.csv, per_frame.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
