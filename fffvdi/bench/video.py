"""Video-level benchmark sections of scripts/benchmark.py: whole inference, high-resolution crops, propagate, data.

Inference cases run in a fresh subprocess each (`scripts/benchmark.py --_case SPEC` -> `run_case`), so every peak
memory is the case's own.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fffvdi.bench import measure as bm
from fffvdi.bench import presets
from fffvdi.bench.footage import find_footage, footage_cases
from fffvdi.bench.footage_score import SOURCE_ERODE, score_case
from fffvdi.config import load_config
from fffvdi.data.motion_scenes import SCENES, masked_psnr, render_scene
from fffvdi.data.synthetic import make_synthetic_dataset
from fffvdi.data.youtube_vos import VideoClipDataset
from fffvdi.errors import InputError
from fffvdi.flow.completion import build_flow_completer
from fffvdi.flow.estimators import DISFlow
from fffvdi.inpaint.config import InferenceConfig
from fffvdi.inpaint.pipeline import FFFVDIPipeline
from fffvdi.inpaint.region import cropped
from fffvdi.inpaint.windows import plan_windows, run_windows
from fffvdi.propagate.clip import propagate_inpaint
from fffvdi.propagate.telea import telea_inpaint
from fffvdi.propagate.options import PropagateOptions
from fffvdi.propagate.video import propagate_video

CASE_TAG = "BENCH_CASE_RESULT "
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "benchmark.py"


def bench_data_loader(args, rep: bm.Report) -> None:
    """VideoClipDataset clips/s on a synthetic YouTube-VOS-layout dataset written to a temp dir."""
    f, size = args.clip_frames, (args.height, args.width)
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_dataset(tmp, num_videos=3, num_frames=f + 5, size=size, num_short=0)
        ds = VideoClipDataset(tmp, num_frames=f, size=size, samples_per_epoch=args.data_clips)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=1, num_workers=args.workers, persistent_workers=args.workers > 0
        )
        t = bm.time_fn(lambda: [None for _ in loader], args.repeats, args.warmup)
        rep.add("data_loader", "clips_per_s", args.data_clips / t.median_s, "clips/s", frames=f,
                size=f"{size[0]}x{size[1]}", workers=args.workers, clips_per_epoch=args.data_clips)


def bench_propagate(args, rep: bm.Report) -> None:
    """Flow-traced propagation vs per-frame Telea: speed, quality on fffvdi.data.motion_scenes, memory vs length."""
    n = 30
    for spec in SCENES:
        gt, masked, masks = render_scene(spec, n, (240, 432), seed=1)
        t0 = time.perf_counter()
        out, unfilled = propagate_inpaint(masked, masks)
        sec = (time.perf_counter() - t0) / n
        rep.add("propagate", f"masked_psnr_{spec.name}", masked_psnr(out, gt, masks), "dB",
                telea=round(masked_psnr(telea_inpaint(masked, masks), gt, masks), 2), size="240x432", frames=n,
                spatial_fraction=round(float(unfilled.sum() / masks.sum()), 4), s_per_frame=round(sec, 3))
    for size in ((240, 432), (272, 640)):
        gt, masked, masks = render_scene(SCENES[0], n, size, seed=2)
        t = bm.time_fn(lambda: propagate_inpaint(masked, masks), args.repeats, args.warmup)
        rep.add("propagate", f"s_per_frame_{size[0]}x{size[1]}", t.median_s / n, "s/frame", scene=SCENES[0].name)
        t = bm.time_fn(lambda: telea_inpaint(masked, masks), args.repeats, args.warmup)
        rep.add("propagate", f"telea_s_per_frame_{size[0]}x{size[1]}", t.median_s / n, "s/frame")
    for radius in (20, PropagateOptions().radius):  # a lazy generated video: memory follows the radius, not the length
        peaks = {}
        for frames in (50, 300):
            video = presets.SyntheticVideo(frames, 240, 432)
            start = bm.current_rss_mb()
            tracemalloc.start()  # numpy reports its buffers: the live data, free of the allocator's high-water mark
            with bm.RSSSampler() as sampler:
                propagate_video(video.read_frames, video.read_masks, frames, lambda t, f: None, DISFlow(),
                                build_flow_completer("smooth"), PropagateOptions(radius=radius), progress=False)
            peaks[frames] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            rep.add("propagate", f"peak_arrays_{frames}_frames_radius_{radius}", peaks[frames], "MiB",
                    rss_peak_mb=round(sampler.peak_mb, 1), rss_growth_mb=round(sampler.peak_mb - start, 1), size="240x432")
        rep.add("propagate", f"peak_arrays_ratio_300_vs_50_radius_{radius}", peaks[300] / peaks[50], "x")
    bench_footage(args, rep)


def bench_footage(args, rep: bm.Report) -> None:
    """Real clips (Debian's opencv-doc): masked PSNR of propagate, with mask.dilate=0, Telea and the flow ceiling."""
    if not args.footage_sizes:
        return
    try:
        root = find_footage()
    except InputError as err:
        rep.add("propagate", "footage", None, "dB", skipped=str(err))
        return
    options = getattr(args, "footage_options", "")
    given = OmegaConf.to_container(OmegaConf.from_dotlist(options.split(",") if options else []))
    opts = PropagateOptions(**{"source_erode": SOURCE_ERODE, **given})  # as inference runs it, unless given
    for case in footage_cases(root, args.footage_frames, tuple(args.footage_sizes.split(","))):
        row = score_case(case, opts)
        rep.add("propagate", f"footage_{case.name}", row.pop("propagate"), "dB", frames=len(case.frames),
                options=options or "defaults", **{k: v for k, v in row.items() if k != "case"})


def run_case(spec: dict) -> dict:
    """One inference case in this (fresh) process: build, warm up one window, time run_windows, report memory."""
    device, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    total, h, w, window = spec["total"], spec["height"], spec["width"], spec["window"]
    comps = presets.build_components(spec["preset"], device, dtype)
    cfg = load_config(InferenceConfig, None, [
        f"window.height={h}", f"window.width={w}", f"window.num_frames={window}", f"window.overlap={spec['overlap']}",
        f"window.decode_chunk_size={spec['chunk']}", f"sampling.num_steps={spec['steps']}", "flow.method=dis",
        f"model.device={spec['device']}",
    ])
    pipe = FFFVDIPipeline(comps, cfg, device, dtype)
    # window.region: each window on its masks' crop (pasted back inside the mask) or on the whole frame.
    seen = []  # (H, W) of what the pipeline was handed: the whole frame, or a window's crop

    def run_pipe(fr, m, g):
        seen.append(list(fr.shape[1:3]))
        return pipe(fr, m, g)

    process = cropped(run_pipe, spec.get("region", "full"), (h, w))
    video = presets.SyntheticVideo(total, *(spec["input_size"] or (h, w)), mask_fraction=spec.get("mask_fraction", 1 / 16))
    n = min(window, total)
    process(video.read_frames(0, n), video.read_masks(0, n), torch.Generator().manual_seed(0))  # warm-up window
    written = []
    bm.reset_cuda_peak(device)
    build_peak = bm.process_peak_rss_mb()  # read first: the reset below also resets getrusage's maxrss on Linux
    kernel_peak = bm.reset_peak_rss()  # the peak of the warm-up (and of the build) must not mask this run's
    runs = []
    with bm.RSSSampler() as rss:
        for _ in range(spec["repeats"] if total <= window else 1):  # a long video is many windows already
            written.clear()
            bm.sync(device)
            start = time.perf_counter()
            run_windows(process, video.read_frames, video.read_masks, total, lambda i, fr: written.append(len(fr)),
                        window, spec["overlap"], progress=False)
            bm.sync(device)
            runs.append(time.perf_counter() - start)
    if sum(written) != total:
        raise RuntimeError(f"run_windows wrote {sum(written)} frames for a {total}-frame video")
    return dict(s_per_frame=bm.Timing(runs).median_s / total, runs=len(runs), pipeline_inputs=seen,
                windows=len(plan_windows(total, window, spec["overlap"])),
                peak_rss_process_mb=max(build_peak, bm.process_peak_rss_mb()),
                peak_rss_run_mb=bm.peak_rss_since_reset_mb() if kernel_peak else rss.peak_mb,
                peak_rss_run_source="VmHWM" if kernel_peak else "sampled", cuda_peak_mb=bm.cuda_peak_mb(device))


def run_subprocess_case(spec: dict, threads: int | None) -> dict:
    """`run_case(spec)` in a fresh `scripts/benchmark.py --_case` process, so its peak memory is its own."""
    cmd = [sys.executable, str(SCRIPT), "--_case", json.dumps(spec)] + (["--threads", str(threads)] if threads else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(CASE_TAG)]
    if proc.returncode != 0 or not lines:
        what = f"{spec['total']}x{spec['height']}x{spec['width']} region={spec.get('region', 'full')}"
        raise RuntimeError(f"inference case {what} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(lines[-1][len(CASE_TAG):])


def bench_inference(args, rep: bm.Report) -> None:
    """Whole inference per output frame and peak memory; every case in a fresh subprocess (independent peaks)."""
    by_size: dict[str, dict[int, dict]] = {}
    for total, h, w in args.case_list:
        spec = dict(preset=args.preset, device=args.device, dtype=args.dtype, total=total, height=h, width=w,
                    window=args.window, overlap=4, chunk=args.chunk, steps=args.steps, repeats=args.repeats,
                    input_size=args.input_hw)
        res = run_subprocess_case(spec, args.threads)
        name = f"{total}f_{h}x{w}"
        detail = dict(steps=args.steps, window=args.window, windows=res["windows"], input=args.input_size or f"{h}x{w}")
        rep.add("inference", f"{name}_time", res["s_per_frame"], "s/frame", runs=res["runs"], **detail)
        rep.add("inference", f"{name}_peak_rss", res["peak_rss_process_mb"], "MiB", note="process lifetime")
        rep.add("inference", f"{name}_peak_rss_run", res["peak_rss_run_mb"], "MiB", source=res["peak_rss_run_source"],
                note="peak during the timed runs (after model build and warm-up)")
        if res["cuda_peak_mb"] is not None:
            rep.add("inference", f"{name}_cuda_peak", res["cuda_peak_mb"], "MiB")
        by_size.setdefault(f"{h}x{w}", {})[total] = res
    for size, res in by_size.items():  # memory growth with video length at the same canvas
        short = res.get(min(res))
        for total, r in res.items():
            if total > min(res):
                key = "cuda_peak_mb" if r["cuda_peak_mb"] is not None else "peak_rss_run_mb"
                name = f"{total}f_over_{min(res)}f_{size}"
                rep.add("inference", f"memory_ratio_{name}", r[key] / short[key], "x", metric=key, target="<= 1.2")
                rep.add("inference", f"memory_growth_{name}", r[key] - short[key], "MiB", metric=key)




def bench_crop(args, rep: bm.Report) -> None:
    """High-resolution input with a small moving mask: `window.region=crop` vs `full`, s/frame and peak memory."""
    total, h, w = args.crop_case
    results = {}
    for region in ("full", "crop"):
        spec = dict(preset=args.preset, device=args.device, dtype=args.dtype, total=total, height=h, width=w,
                    window=args.window, overlap=4, chunk=args.chunk, steps=args.steps, repeats=1,
                    input_size=args.crop_input, region=region, mask_fraction=0.05)
        results[region] = res = run_subprocess_case(spec, args.threads)
        detail = dict(input=f"{args.crop_input[0]}x{args.crop_input[1]}", canvas=f"{h}x{w}", frames=total,
                      steps=args.steps, mask="5% of the area, moving")
        rep.add("crop", f"{region}_time", res["s_per_frame"], "s/frame", **detail)
        key = "cuda_peak_mb" if res["cuda_peak_mb"] is not None else "peak_rss_run_mb"
        rep.add("crop", f"{region}_peak", res[key], "MiB", metric=key)
        largest = max(res["pipeline_inputs"], key=lambda hw: hw[0] * hw[1])
        rep.add("crop", f"{region}_pipeline_input", largest[0] * largest[1], "px", hw=largest,
                note="largest frame size the pipeline was handed")
    rep.add("crop", "crop_speedup", results["full"]["s_per_frame"] / results["crop"]["s_per_frame"], "x",
            note="full s/frame / crop s/frame")
