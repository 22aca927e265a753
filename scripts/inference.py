"""Inpaint a video: `python scripts/inference.py --video FRAMES_OR_MP4 --mask MASKS [--config YAML] [key=value ...]`.

Writes to --output (default results/<name>-<method>/, where <name> is a video file's stem or a
frames folder's name, its parent's when the folder is generic such as frames/ or JPEGImages/):
inpainted.mp4, frames/ (PNG, input names), masked_input.mp4, comparison.mp4 and config.yaml.

The config, every frame and every mask, the model's files and the output folder are checked before any model loads
or anything is written; every problem found is reported at once, one `error: ...` line each. The run writes into
OUT.partial/, renamed to OUT only once complete, so a folder OUT is always a finished result.
An interrupted run (Ctrl-C, an error, a full disk) leaves OUT.partial/: --resume continues it
from the last finished window with the same result as an uninterrupted run (the `propagate`
method starts it over), --overwrite starts over. An existing OUT is replaced only with --overwrite.

Many videos: --video-list LIST (lines `VIDEO MASK [OUTPUT]`) or --video PARENT --mask MASKPARENT (one video per
subfolder or video file, masks matched by name): the model is built once, each video gets OUT/<name>/, a failed
video is reported and the rest go on, OUT/summary.json records every video; the exit status is the number of
failed videos. Under `accelerate launch` the videos are shared out over the processes (fffvdi/inpaint/batch.py).
Masks from one annotation: --box x,y,w,h (or --mask ONE.png) with --mask-frame K are tracked over the video
(fffvdi.tracking) and saved in OUT/masks/ before inpainting.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from fffvdi.config import load_config
from fffvdi.errors import FFFVDIError, InputError, ModelLoadError
from fffvdi.inpaint.checks import CHOICES, check_inference_config, model_problems
from fffvdi.inpaint.config import InferenceConfig, mask_options, resolve_canvas, resolve_method
from fffvdi.io import MaskSource, default_output_dir, open_video
from fffvdi.tracking.inputs import annotation_from_args, seed_mask, tracked_mask_source

logger = logging.getLogger("inference")


class Interrupted(FFFVDIError):
    """Ctrl-C: the unfinished output is kept for --resume."""


class InputProblems(InputError):
    """Several problems of one run's inputs, found together; each is printed on its own `error: ...` line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def raise_problems(errors: Sequence[FFFVDIError]) -> None:
    """Raise the one error found as it is, several as one InputProblems; nothing when there are none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise InputProblems([str(e) for e in errors])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=None, help="frames folder (jpg/png) or video file (mp4/avi/mov); or a folder "
                   "of such videos (then --mask is a folder of masks named like them and --output their parent)")
    p.add_argument("--mask", default=None, help="masks folder, one image for all frames, or a mask video; with "
                   "--mask-frame K: one annotation image of frame K, tracked over the video")
    p.add_argument("--video-list", default=None, help="text file, one 'VIDEO MASK [OUTPUT]' per line (# comments; "
                   "VIDEO/MASK relative to the file, OUTPUT to --output): many videos, one model load")
    p.add_argument("--box", default=None, help="x,y,w,h: the object's box on frame --mask-frame (default 0); masks "
                   "are tracked over the video and saved in OUT/masks/")
    p.add_argument("--mask-frame", type=int, default=None, help="frame index the --box or --mask annotation is drawn on")
    p.add_argument("--tracker", default="flow", help="mask tracker for --box/--mask-frame: flow (weight-free) | sam2")
    p.add_argument("--sam2", default=None, help="SAM 2 hub id or local folder for --tracker sam2")
    p.add_argument("--config", default=None, help="YAML config (defaults: fffvdi/inpaint/config.py)")
    p.add_argument("--output", default=None, help="output folder (default results/<name>-<method>/: <name> is the "
                   "video file's stem or the frames folder's name, its parent's if the folder is frames/, images/, ...)")
    p.add_argument("--method", choices=CHOICES["method"], default=None,
                   help="overrides method (auto: fffvdi with --checkpoint, else propagate)")
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
        resolve_method(cfg)  # before the output folder is named: results/<name>-<method> says what ran
        resolve_canvas(cfg)  # an unset canvas follows the checkpoint's training size
        check_inference_config(cfg)

    return load_config(InferenceConfig, args.config, overrides, check=check)  # errors say where a value was set


def run(args: argparse.Namespace) -> int:
    """One video, or a batch of them; returns the exit status."""
    from fffvdi.inpaint.batch import is_video_parent

    if args.video_list is None and (args.video is None or (args.mask is None and args.box is None)):
        raise InputError("pass --video with --mask MASKS (or --box x,y,w,h, or --mask ONE.png --mask-frame K), "
                         "or --video-list LIST")
    if args.video_list is not None or is_video_parent(args.video):
        return run_batch(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every process would write the same folder
        raise InputError("one video runs in one process; drop `accelerate launch`, or shard many videos with "
                         "--video-list LIST or --video PARENT")
    cfg = build_config(args)
    annotation = annotation_from_args(args.box, args.mask, args.mask_frame, args.tracker, args.sam2)
    out = inpaint_video(cfg, args.video, args.mask, cfg.output.dir or default_output_dir(args.video, cfg.method),
                        args.resume, _method_once(cfg), annotation, [ModelLoadError(p) for p in model_problems(cfg)])
    print(f"done: {out}")
    return 0


def _method_once(cfg) -> Callable[[], object]:
    """A getter of the method, built on its first call only (a run whose frames are all done loads no model) and
    reused for every video; a failed build fails every later call alike instead of loading again."""
    built: list = []

    def get():
        from fffvdi.inpaint.methods import build_method

        if not built:
            try:
                built.append(build_method(cfg))
            except Exception as err:
                built.append(err)
        if isinstance(built[0], Exception):
            raise built[0]
        return built[0]

    return get


def inpaint_video(cfg, video_path, mask_path, out_dir, resume: bool, method, annotation: Optional[dict] = None,
                  problems: Sequence[FFFVDIError] = ()) -> Path:
    """Check one video's inputs and output, then inpaint it into `out_dir` (via OUT.partial/); returns `out_dir`.

    `problems` (the model's, found by the caller) and those of the video, masks and output are raised together."""
    from omegaconf import OmegaConf

    from fffvdi.inpaint.partial import PartialOutput

    errors, video, masks, info, seed = list(problems), None, None, {}, None
    options = mask_options(cfg)
    try:
        try:
            video = open_video(video_path, fps=cfg.fps)  # reads every frame's header: a bad frame fails now
            if annotation is None:
                masks = MaskSource.for_video(mask_path, video, **options)
                masks.check()  # reads every mask: errors now if one is bad or all is hole, warns if nothing is
                info = {"mask": str(Path(mask_path).resolve())}
            else:
                seed = seed_mask(annotation, video)  # a bad annotation fails before anything is written
                info = {"annotation": annotation}
        except FFFVDIError as err:  # the masks are checked against the frames, so a bad video hides mask problems
            errors.append(err)
        out = PartialOutput(out_dir, cfg.output.overwrite, resume)
        try:
            out.check()
        except FFFVDIError as err:
            errors.append(err)
        raise_problems(errors)  # every problem at once: the user fixes them in one go
        info.update(video=str(Path(video_path).resolve()), frames=len(video), size=list(video.size), fps=video.fps)
        out.begin(OmegaConf.to_yaml(cfg, resolve=True), info)
        try:
            if annotation is not None:
                logger.info("tracking the annotation of frame %d over %d frames", annotation["frame"], len(video))
                masks = tracked_mask_source(video, seed, annotation, out.partial / "masks", out.resumed, **options)
            return _inpaint(cfg, video, masks, out, method)
        except BaseException as err:
            if out.discard_if_unused():  # a failed start (e.g. model loading): nothing worth keeping
                raise _explained(err, None) from None
            raise _explained(err, out.partial) from None
    finally:
        if video is not None:
            video.close()
        if masks is not None:
            masks.close()


def run_batch(args: argparse.Namespace) -> int:
    """Many videos (--video-list or a parent folder), sharded over `accelerate launch` processes; returns the exit
    status (failed videos, capped at 100). Up-front problems (config, list, unmatched masks) fail every process."""
    import copy
    import functools

    from fffvdi.inpaint import batch
    from fffvdi.shards import agree, all_gather, finish, process_state, rank_device, shard

    state = process_state()
    error = None
    try:
        cfg = build_config(args)
        raise_problems([ModelLoadError(p) for p in model_problems(cfg)])  # once for all videos, before any is read
        if args.video_list is not None and (args.video is not None or args.mask is not None):
            raise InputError("--video-list names every video and mask; drop --video/--mask or the list")
        if args.box is not None or args.mask_frame is not None:
            raise InputError("--box/--mask-frame annotate one video; track each video's masks first "
                             "(scripts/inference.py --video V --box ...) and list them")
        source = args.video_list or args.video
        root = Path(cfg.output.dir or default_output_dir(source, cfg.method))
        if args.video_list is not None:
            jobs = batch.read_video_list(args.video_list, root)
        else:
            jobs = batch.scan_parent(args.video, args.mask or "", root)
    except FFFVDIError as err:
        error = err
    try:
        agree(state, error)  # every process fails alike, before any writes
    except FFFVDIError as err:
        finish(state, err)
        raise
    mine = shard(jobs, state.process_index, state.num_processes)
    method_cfg = copy.deepcopy(cfg)
    method_cfg.model.device = rank_device(cfg.model.device, state)  # each process on its own GPU
    method = _method_once(method_cfg)

    def job_cfg(job):
        one = copy.deepcopy(cfg)
        one.output.dir = str(job.output)  # config.yaml says where this video's result is
        return one

    def run_one(job) -> None:
        inpaint_video(job_cfg(job), job.video, job.mask, job.output, args.resume, method)

    logger.info("%d videos, %d on this process -> %s", len(jobs), len(mine), root)
    check = functools.partial(batch.check_job, cfg=cfg, resume=args.resume)
    outcomes = batch.run_jobs(mine, check, run_one, rank=state.process_index, fatal=(Interrupted,))
    gathered = all_gather(state, outcomes)  # also the barrier: every process has finished its videos
    order = {str(job.output): i for i, job in enumerate(jobs)}
    outcomes = sorted((o for part in gathered for o in part), key=lambda o: order[o.output])
    if state.is_main_process:
        path = batch.write_summary(root, outcomes, cfg.method, state.num_processes)
        print(f"{batch.summary_line(outcomes)}; {path}", flush=True)
    finish(state)
    return batch.exit_status(outcomes)


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


def _inpaint(cfg, video, masks, out, method: Callable[[], object]) -> Path:
    """Run the method (`method()` builds it once) into `out.partial` (resuming it if asked), encode the mp4s and
    finish the folder."""
    from fffvdi.io import VideoWriter, encode_outputs, png_name

    progress = out.progress()
    process = method() if not progress["complete"] else None  # complete: only the mp4s are missing
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
        return run(parse_args(argv))
    except Interrupted as err:
        print(f"{err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before anything was written
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    except FFFVDIError as err:
        lines = getattr(err, "problems", None) or [str(err)]  # InputProblems: one line each
        sys.stderr.write("".join(f"error: {line}\n" for line in lines))  # one write: processes sharing stderr do not mix
        sys.stderr.flush()
        return 2


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one `warning: ...` line (the source line of the warning call means nothing to a user)."""
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    warnings.showwarning = _show_warning
    sys.exit(main())
