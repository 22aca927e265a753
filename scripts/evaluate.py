"""Evaluate video inpainting on DAVIS / YouTube-VOS test sets with the STTN / E2FGVI / ProPainter protocol.

Score existing results:
  python scripts/evaluate.py --dataset-root ROOT --results DIR --output OUT
Run a method, save its frames to OUT/results/<video>/ and score them (resumable):
  python scripts/evaluate.py --dataset-root ROOT --method fffvdi|propagate|telea [--config YAML] [key=value ...] --output OUT

ROOT holds JPEGImages/<video>/*.jpg (or JPEGImages_432_240/) and test_masks/<video>/*.png (a synthetic
set in this layout: python scripts/make_synthetic_dataset.py OUT --eval). Frames are
resized to --size (W x H, default 432x240, bilinear) whatever their aspect ratio, masks alike (nearest; they
must be at the frames' size or aspect ratio, or at --size already), > 0, dilated (3x3 cross, 4x);
predictions are composited inside the mask. Writes OUT/per_video.csv, OUT/per_frame.csv,
OUT/summary.json and prints a table (E_warp in units of 1e-3). A rerun with the same settings
skips finished videos; different settings in an existing OUT need --overwrite.

Several processes (GPUs, machines): accelerate launch [--multi_gpu] --num_processes N scripts/evaluate.py ...
gives video i (of the sorted listing) to process i % N, each on its own device; the main process then
merges every video into the same files as one process writes (OUT must be shared by all machines).
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from fffvdi.errors import FFFVDIError, InputError
from fffvdi.evaluation import EVAL_METHODS, EvalSettings, parse_size, run_evaluation
from fffvdi.flow.estimators import FLOW_ESTIMATORS
from fffvdi.shards import agree, finish, process_state

FLOWS = tuple(FLOW_ESTIMATORS)  # the E_warp flow model


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (exit 2), like every other error of this script."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--flow", choices=FLOWS, default="dis", help="flow model for E_warp (default dis)")
    p.add_argument("--raft-weights", default=None,
                   help="local RAFT state dict for --flow raft_* (needed unless torchvision's file is in torch's cache)")
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


def _check_device(device: str) -> None:
    """--device names a device torch knows and that this machine has (the same rule as model.device)."""
    from fffvdi.config import device_problem

    problem = device_problem(device)
    if problem is not None:
        raise InputError(f"--device {problem}")


def _check_flow(flow: str, raft_weights: str | None) -> None:
    """RAFT's weights exist and load now, so E_warp cannot fail after the output folder is written."""
    if flow == "dis":
        if raft_weights is not None:
            raise InputError("--raft-weights only applies with --flow raft_large or raft_small; drop it or choose a RAFT --flow")
        return
    import torch
    from torchvision.models import optical_flow as of

    from fffvdi.flow.estimators import build_flow_estimator

    url = (of.Raft_Large_Weights if flow == "raft_large" else of.Raft_Small_Weights).DEFAULT.url
    name = url.rsplit("/", 1)[-1]
    if raft_weights is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / name
        if not cached.is_file():  # evaluation never downloads: the weights must be named or already cached
            raise InputError(f"--flow {flow} needs its weights: pass --raft-weights FILE ({name}, from {url}) or put it at {cached}")
        return
    if not Path(raft_weights).is_file():
        raise InputError(f"--raft-weights {raft_weights} not found; pass the RAFT state dict {name} (from {url})")
    try:
        build_flow_estimator(flow, weights_path=raft_weights, device="cpu")
    except (FFFVDIError, RuntimeError) as err:  # unreadable file, or a state dict of another network
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"--raft-weights {raft_weights} is not a {flow} state dict ({first[:200]}); pass {name}") from None


def check_args(args: argparse.Namespace) -> None:
    """Reject bad flags and model sources (one-line InputError) before run_evaluation writes a file or loads a model."""
    if args.mask_dilate < 0:
        raise InputError(f"--mask-dilate {args.mask_dilate} must be >= 0 (iterations of the 3x3 cross; the protocol uses 4)")
    _check_device(args.device)
    _check_flow(args.flow, args.raft_weights)
    if args.i3d_weights is not None and Path(args.i3d_weights).is_file():  # a missing file is reported by the harness
        from fffvdi.metrics import load_i3d

        try:
            load_i3d(args.i3d_weights, "cpu")  # a corrupt or foreign checkpoint fails here, not after the videos
        except FFFVDIError as err:  # torch's unpickling errors span many lines: keep the first
            raise InputError(f"--i3d-weights: {str(err).splitlines()[0][:300]}") from None
    # the method's config and model source are checked by the harness (_method_config), also before any write


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    state = process_state()  # one process, or this one's rank under `accelerate launch`
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    args = parse_args(argv)
    try:
        error = None
        try:
            settings = settings_from_args(args)
            check_args(args)
        except FFFVDIError as err:
            error = err
        agree(state, error)  # every process fails with the same message, before any writes
        outcome = run_evaluation(settings, state)
    except FFFVDIError as err:
        sys.stderr.write(f"error: {err}\n")  # one write: the lines of several processes sharing stderr do not mix
        sys.stderr.flush()
        finish(state, err)
        return 2
    finally:
        warnings.formatwarning = previous
    if outcome.is_main:  # the main process merged every video and reports them
        print(outcome.table)
        print(f"wrote {outcome.out_dir / 'summary.json'}, per_video.csv, per_frame.csv", flush=True)
    finish(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
