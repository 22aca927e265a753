"""Inpaint a video: `python scripts/inference.py --video FRAMES_OR_MP4 --mask MASKS [--config YAML] [key=value ...]`.

Writes to --output (default results/<input name>/): inpainted.mp4, frames/ (PNG, input names),
masked_input.mp4, comparison.mp4 and config.yaml (the resolved config).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from fffvdi.config import load_config, save_config
from fffvdi.errors import FFFVDIError
from fffvdi.inference_config import InferenceConfig, resolve_canvas

OVERLAY = np.array([255, 64, 64], np.float32)  # mask colour in masked_input.mp4


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="frames folder (jpg/png) or video file (mp4/avi/mov)")
    p.add_argument("--mask", required=True, help="masks folder, one image for all frames, or a mask video")
    p.add_argument("--config", default=None, help="YAML config (defaults: fffvdi/inference_config.py)")
    p.add_argument("--output", default=None, help="output folder (default results/<input name>/)")
    p.add_argument("--method", choices=["fffvdi", "propagate", "telea"], default=None, help="overrides method")
    p.add_argument("--checkpoint", default=None, help="fine-tuned FFF-VDI UNet folder (overrides model.checkpoint)")
    p.add_argument("--fps", type=float, default=None, help="fps of a frames-folder input (default 24)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing non-empty output folder")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. sampling.num_steps=10")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):
    """Config file + flags + dotlist, flags mapped onto their keys."""
    overrides = list(args.overrides)
    for flag, key in (("output", "output.dir"), ("method", "method"), ("checkpoint", "model.checkpoint"), ("fps", "fps")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.overwrite:
        overrides.append("output.overwrite=true")
    cfg = load_config(InferenceConfig, args.config, overrides)
    resolve_canvas(cfg)  # an unset canvas follows the checkpoint's training size
    return cfg


def run(args: argparse.Namespace) -> Path:
    """Read, inpaint window by window, write; returns the output folder."""
    import torch

    from fffvdi.io import MaskSource, RecentFrames, VideoWriter, open_video, prepare_output_dir
    from fffvdi.methods import build_method

    cfg = build_config(args)
    video = open_video(args.video, fps=cfg.fps)
    masks = MaskSource.for_video(
        args.mask, video, threshold=cfg.mask.threshold, dilate=cfg.mask.dilate, resize=cfg.mask.resize,
        mode=cfg.mask.mode,
    )
    masks.is_empty()  # warns (naming the path) when no frame has a hole; the output then equals the input
    name = Path(args.video).stem if Path(args.video).is_file() else Path(args.video).resolve().name
    out_path = Path(cfg.output.dir or Path("results") / name)
    if out_path.exists() and any(out_path.iterdir()) and not cfg.output.overwrite:  # fail before loading models
        prepare_output_dir(out_path, overwrite=False)
    process = build_method(cfg)
    out_dir = prepare_output_dir(out_path, cfg.output.overwrite)
    save_config(cfg, out_dir / "config.yaml")
    logging.info("%d frames %dx%d at %.3g fps -> %s", len(video), video.size[1], video.size[0], video.fps, out_dir)
    o = cfg.output
    main = VideoWriter(out_dir, video.fps, write_png=o.save_frames, write_mp4=o.save_mp4, mp4_name="inpainted.mp4")
    side = {
        "masked": VideoWriter(out_dir, video.fps, write_png=False, mp4_name="masked_input.mp4") if o.save_masked_input else None,
        "comparison": VideoWriter(out_dir, video.fps, write_png=False, mp4_name="comparison.mp4") if o.save_comparison else None,
    }

    # The writers below re-read frames the method read a while ago (a window, or `propagate.radius` frames
    # back): keep them, since re-reading a video file behind its decoder restarts decoding from frame 0.
    keep = cfg.window.num_frames + 1 if cfg.method != "propagate" else cfg.propagate.radius + 3
    read_frames, read_masks = RecentFrames(video.read, keep), RecentFrames(masks.read, keep)

    def sink(first: int, frames: np.ndarray) -> None:
        stop = first + len(frames)
        main.write(frames, video.names[first:stop])
        if side["masked"] or side["comparison"]:
            src = read_frames(first, stop)
            hole = read_masks(first, stop)[..., None].astype(np.float32)
            if side["masked"]:
                tinted = src * (1 - 0.5 * hole) + OVERLAY * 0.5 * hole
                side["masked"].write(np.clip(tinted, 0, 255).astype(np.uint8), video.names[first:stop])
            if side["comparison"]:
                side["comparison"].write(np.concatenate([src, frames], axis=2), video.names[first:stop])

    try:
        process(read_frames, read_masks, len(video), sink)
    except torch.cuda.OutOfMemoryError:
        raise FFFVDIError(
            "out of GPU memory; try memory.offload=model window.decode_chunk_size=2 memory.forward_chunk_size=1 "
            "or a smaller window.height/window.width/window.num_frames"
        ) from None
    finally:
        for w in (main, *side.values()):
            if w is not None:
                w.close()
        video.close()
    return out_dir


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
