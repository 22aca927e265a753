"""Inpaint a video: `python scripts/inference.py --video FRAMES_OR_MP4 --mask MASKS [--config YAML] [key=value ...]`.

Writes to --output (default results/<name>-<method>/, where <name> is a video file's stem or a
frames folder's name, its parent's when the folder is generic such as frames/ or JPEGImages/):
inpainted.mp4, frames/ (PNG, input names), masked_input.mp4, comparison.mp4 and config.yaml.

The config, every frame and every mask are checked before any model loads. The run writes into
OUT.partial/, renamed to OUT only once complete, so a folder OUT is always a finished result.
An interrupted run (Ctrl-C, an error, a full disk) leaves OUT.partial/: --resume continues it
from the last finished window with the same result as an uninterrupted run (the `propagate`
method starts it over), --overwrite starts over. An existing OUT is replaced only with --overwrite.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from fffvdi.config import load_config
from fffvdi.errors import FFFVDIError
from fffvdi.inference_config import InferenceConfig, check_inference_config, resolve_canvas

logger = logging.getLogger("inference")


class Interrupted(FFFVDIError):
    """Ctrl-C: the unfinished output is kept for --resume."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="frames folder (jpg/png) or video file (mp4/avi/mov)")
    p.add_argument("--mask", required=True, help="masks folder, one image for all frames, or a mask video")
    p.add_argument("--config", default=None, help="YAML config (defaults: fffvdi/inference_config.py)")
    p.add_argument("--output", default=None, help="output folder (default results/<name>-<method>/: <name> is the "
                   "video file's stem or the frames folder's name, its parent's if the folder is frames/, images/, ...)")
    p.add_argument("--method", choices=["fffvdi", "propagate", "telea"], default=None, help="overrides method")
    p.add_argument("--checkpoint", default=None, help="fine-tuned FFF-VDI UNet folder (overrides model.checkpoint)")
    p.add_argument("--fps", type=float, default=None, help="fps of a frames-folder input (default 24)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing result in --output (and any unfinished OUT.partial) instead of refusing")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished OUT.partial of an interrupted run with the same inputs and settings")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. sampling.num_steps=10")
    return p.parse_intermixed_args(argv)  # overrides may come before, between or after flags


def build_config(args: argparse.Namespace):
    """Config file + flags + dotlist, flags mapped onto their keys, checked in full."""
    overrides = list(args.overrides)
    for flag, key in (("output", "output.dir"), ("method", "method"), ("checkpoint", "model.checkpoint"), ("fps", "fps")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.overwrite:
        overrides.append("output.overwrite=true")

    def check(cfg) -> None:
        resolve_canvas(cfg)  # an unset canvas follows the checkpoint's training size
        check_inference_config(cfg)

    return load_config(InferenceConfig, args.config, overrides, check=check)  # errors say where a value was set


def run(args: argparse.Namespace) -> Path:
    """Check everything, then read, inpaint window by window and write; returns the finished output folder."""
    from omegaconf import OmegaConf

    from fffvdi.io import MaskSource, default_output_dir, open_video
    from fffvdi.io.partial import PartialOutput

    cfg = build_config(args)
    video = open_video(args.video, fps=cfg.fps)  # reads every frame's header: a bad frame fails now
    masks = MaskSource.for_video(
        args.mask, video, threshold=cfg.mask.threshold, dilate=cfg.mask.dilate, resize=cfg.mask.resize,
        mode=cfg.mask.mode,
    )
    masks.check()  # reads every mask: errors now if one is bad or all is hole, warns if nothing is
    out = PartialOutput(cfg.output.dir or default_output_dir(args.video, cfg.method), cfg.output.overwrite, args.resume)
    out.check()
    info = {"video": str(Path(args.video).resolve()), "mask": str(Path(args.mask).resolve()), "frames": len(video),
            "size": list(video.size), "fps": video.fps}
    out.begin(OmegaConf.to_yaml(cfg, resolve=True), info)
    try:
        return _inpaint(cfg, video, masks, out)
    except BaseException as err:
        if out.discard_if_unused():  # a failed start (e.g. model loading): nothing worth keeping
            raise _explained(err, None) from None
        raise _explained(err, out.partial) from None
    finally:
        video.close()
        masks.close()


def _explained(err: BaseException, partial) -> BaseException:
    """One-line error for a failed run, saying where its unfinished output is kept (if anywhere)."""
    import torch

    kept = f"; unfinished output kept in {partial}: rerun with --resume to continue" if partial else ""
    if isinstance(err, KeyboardInterrupt):
        return Interrupted(f"interrupted{kept}")
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return FFFVDIError(
            "out of GPU memory; try memory.offload=model window.decode_chunk_size=2 memory.forward_chunk_size=1 "
            f"or a smaller window.height/window.width/window.num_frames{kept}"
        )
    if isinstance(err, FFFVDIError):
        return type(err)(f"{err}{kept}")
    if isinstance(err, OSError):
        writing = partial is not None and err.filename and str(partial) in str(err.filename)
        what = f"cannot write {err.filename}" if writing else f"I/O error{f' on {err.filename}' if err.filename else ''}"
        return FFFVDIError(f"{what} ({err.strerror or err}); free space or fix permissions{kept}")
    return err  # a bug: keep its traceback


def _inpaint(cfg, video, masks, out) -> Path:
    """Run the method into `out.partial` (resuming it if asked), encode the mp4s and finish the folder."""
    from fffvdi.io import VideoWriter, encode_outputs, png_name
    from fffvdi.methods import build_method

    progress = out.progress()
    process = build_method(cfg) if not progress["complete"] else None  # complete: only the mp4s are missing
    resumable = getattr(process, "resumable", False)
    if out.resumed and process is not None and not resumable:
        logger.warning("--resume: method %s streams over the whole video and cannot resume; starting %s again "
                       "from frame 0", cfg.method, out.partial)
        progress = {"done": 0, "complete": False, "state": None}
    elif out.resumed:
        out.check_frames(video.names, progress["done"])
        logger.info("resuming %s: %d of %d frames already done", out.partial, progress["done"], len(video))
    logger.info("%d frames %dx%d at %.3g fps -> %s", len(video), video.size[1], video.size[0], video.fps, out.final)
    if not progress["complete"]:
        done = [png_name(n) for n in video.names[: progress["done"]]]
        writer = VideoWriter(out.partial, video.fps, write_png=True, write_mp4=False, written=done)

        def sink(first: int, frames) -> None:
            writer.write(frames, video.names[first : first + len(frames)])

        kwargs = {}
        if resumable:
            kwargs = dict(resume=progress["state"],
                          checkpoint=lambda state: out.save_progress(state.done, state=state))
        try:
            process(video.read, masks.read, len(video), sink, **kwargs)
        finally:
            writer.close()
        out.save_progress(len(video), complete=True)  # a failure while encoding does not redo the frames
    o = cfg.output
    encode_outputs(out.partial, video.names, video.fps, video.read, masks.read, inpainted=o.save_mp4,
                   masked_input=o.save_masked_input, comparison=o.save_comparison)
    return out.finish(keep_frames=o.save_frames)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = run(parse_args(argv))
    except Interrupted as err:
        print(f"{err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before anything was written
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    except FFFVDIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: {out}")
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one `warning: ...` line (the source line of the warning call means nothing to a user)."""
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    warnings.showwarning = _show_warning
    sys.exit(main())
