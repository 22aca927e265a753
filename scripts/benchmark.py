"""Speed and memory benchmarks: `python scripts/benchmark.py [--preset tiny|svd-xt] [--device cpu|cuda]
[--out FILE.json] [--only section,...] [--repeats N]`.

Sections: unet_step (FFF-VDI UNet vs the plain SVD UNet with the same weights vs the DNA module alone),
flow (estimation; completion: smooth, cv2_inpaint, propainter), vae (encode, chunked decode), inference (whole pipeline per output frame and
peak memory, each case in a fresh subprocess), train_step (EDM loss forward + backward + AdamW step),
crop (1080p input with a mask of 5 % of the area: window.region=crop vs full), data_loader (clips/s), propagate (the weight-free method: s/frame at 432x240 and 640x272, masked PSNR vs Telea
on the real-motion-like scenes, peak memory for 300 vs 50 frames, and real footage: masked PSNR of propagate / with
mask.dilate=0 / Telea / the flow ceiling on Debian's opencv-doc clips, fffvdi/bench/footage.py). Timings are medians of --repeats runs after --warmup runs. All weights are random:
speed does not depend on their values. Prints a markdown table and writes JSON with machine, versions, commit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: never touch the network

import torch

from fffvdi.bench import measure as bm
from fffvdi.bench import presets
from fffvdi.bench.model import latent_conditions, train_step, unet_inputs
from fffvdi.bench.video import CASE_TAG, REPO, bench_crop, bench_data_loader, bench_inference, bench_propagate, run_case

SECTIONS = ("unet_step", "flow", "vae", "inference", "crop", "train_step", "data_loader", "propagate")
__all__ = ["run_case"]  # tests call it through this script, as `--_case` does


def defaults(preset: str, device: str) -> dict:
    """Sizes per preset and device; CPU ones are cut so a run takes minutes on a small CPU."""
    if device == "cuda":
        return dict(sections=SECTIONS, frames=25, height=256, width=512, flow_frames=25, steps=25, chunk=8,
                    cases="25x256x512,25x576x1024,200x256x512", input_size=None, data_clips=16, repeats=3,
                    crop_case="100x576x1024")
    if preset == "svd-xt":  # a real-size UNet step at 4 frames takes ~40 s on one busy core: this section only
        return dict(sections=("unet_step",), frames=4, height=256, width=512, flow_frames=2, steps=2, chunk=2,
                    cases="25x256x512,200x256x512", input_size=None, data_clips=8, repeats=2, crop_case="25x256x512")
    # Tiny on CPU: real 256x512 (HxW) frames, few of them; inference on a 64x128 canvas fed 256x512 input frames, so
    # a run that kept the whole video in memory would show in the 200- vs 25-frame peak.
    return dict(sections=SECTIONS, frames=4, height=256, width=512, flow_frames=2, steps=4, chunk=4,
                cases="25x64x128,200x64x128", input_size="256x512", data_clips=8, repeats=3, crop_case="20x128x256")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=presets.PRESETS, default="tiny", help="tiny random SVD or SVD-XT's real architecture")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="default: float16 on cuda, float32 on cpu")
    p.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    p.add_argument("--only", default=None, help=f"comma-separated sections out of {','.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per measurement, median reported (default 3; svd-xt on cpu 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    p.add_argument("--footage-sizes", default="native,240x432",
                   help="propagate's real-footage cases (Debian's opencv-doc clips, fetched with apt-get when missing): "
                        "comma-separated sizes, native and/or HxW; empty to skip")
    p.add_argument("--footage-frames", type=int, default=30, help="frames per real-footage case")
    p.add_argument("--footage-options", default="",
                   help="propagate options for the real-footage cases, comma-separated key=value (e.g. "
                        "unrevealed=carry,trust=2); default: the method's defaults")
    p.add_argument("--frames", type=int, default=None, help="frames for unet_step / vae / train_step (>= 2)")
    p.add_argument("--height", type=int, default=None, help="pixel height there and in flow, data_loader (x64)")
    p.add_argument("--width", type=int, default=None, help="pixel width of those sections (multiple of 64)")
    p.add_argument("--batch", type=int, default=1, help="UNet batch (2 = one classifier-free-guided step)")
    p.add_argument("--flow-frames", type=int, default=None, help="frames of the flow section (pairs = frames - 1)")
    p.add_argument("--raft-iters", type=int, default=20, help="RAFT refinement iterations (recipe: 20)")
    p.add_argument("--chunk", type=int, default=None, help="VAE encode/decode chunk size in frames")
    p.add_argument("--steps", type=int, default=None, help="sampling steps in the inference section")
    p.add_argument("--cases", default=None, help="inference cases FRAMESxHEIGHTxWIDTH,...; window 25, overlap 4")
    p.add_argument("--input-size", default=None, help="HxW of inference input frames (default: canvas)")
    p.add_argument("--crop-case", default=None, help="crop section: FRAMESxCANVAS_HxCANVAS_W (cuda 100x576x1024)")
    p.add_argument("--crop-input", default="1080x1920", help="crop section: HxW of the input frames")
    p.add_argument("--window", type=int, default=25, help="frames per inference window")
    p.add_argument("--clip-frames", type=int, default=25, help="frames per clip in data_loader (training clip length)")
    p.add_argument("--data-clips", type=int, default=None, help="clips per data-loader epoch")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in train_step")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is steadier on a busy CPU)")
    p.add_argument("--_case", default=None, help=argparse.SUPPRESS)  # internal: one inference case in this process
    args = p.parse_args(argv)
    for key, value in defaults(args.preset, args.device).items():
        if key not in ("sections", "input_size") and getattr(args, key) is None:
            setattr(args, key, value)
    sections = args.only.split(",") if args.only else list(defaults(args.preset, args.device)["sections"])
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
    if args.height % 64 or args.width % 64:
        p.error(f"--height {args.height} and --width {args.width} must be multiples of 64 (SVD's latent grid)")
    args.sections = sections
    if args.input_size is None:
        args.input_size = defaults(args.preset, args.device)["input_size"]
    try:
        args.case_list = [parse_sizes(c, 3, "--cases entry") for c in args.cases.split(",")]
        args.input_hw = parse_sizes(args.input_size, 2, "--input-size") if args.input_size else None
        args.crop_case = parse_sizes(args.crop_case, 3, "--crop-case")
        args.crop_input = parse_sizes(args.crop_input, 2, "--crop-input")
    except ValueError as err:
        p.error(str(err))
    if min(args.frames, args.flow_frames) < 2 or args.clip_frames < 1:
        p.error("--frames and --flow-frames need >= 2 (flows join neighbouring frames), --clip-frames >= 1")
    if args.window <= 4:
        p.error(f"--window {args.window} must exceed the overlap of 4 frames")
    if args.dtype is None:
        args.dtype = "float16" if args.device == "cuda" else "float32"
    return args


def parse_sizes(text: str, parts: int, what: str) -> list[int]:
    """'25x256x512' -> [25, 256, 512]; ValueError naming `what` otherwise."""
    values = text.lower().split("x")
    if len(values) != parts or not all(v.isdigit() and int(v) > 0 for v in values):
        raise ValueError(f"{what} {text!r} must be {parts} positive integers joined by 'x'")
    return [int(v) for v in values]


def bench_unet_step(args, device: torch.device, dtype: torch.dtype, rep: bm.Report) -> None:
    """One denoising step: FFF-VDI UNet, plain SVD UNet (propagation skipped), DNA module alone."""
    comps = presets.build_components(args.preset, device, dtype, parts=("unet",))
    unet = comps.unet
    b, f, h, w = args.batch, args.frames, args.height // 8, args.width // 8
    sample, timestep, embeds, ids = unet_inputs(unet, b, f, h, w, device, dtype)
    masks, fw, bw = latent_conditions(b, f, h, w, 8, device)
    channels = unet.propagation.config["channels"]
    feats = torch.randn(b, f, channels, h, w, generator=torch.Generator().manual_seed(2)).to(device, dtype)
    from fffvdi.models.propagation import build_propagation

    official = build_propagation(channels, arch="official").to(device, dtype)  # the authors' layout
    bm.reset_cuda_peak(device)
    with torch.no_grad():
        t = bm.time_interleaved(dict(
            fffvdi=lambda: unet(sample, timestep, embeds, ids, masks, fw, bw),
            plain=lambda: unet(sample, timestep, embeds, ids),  # masks/flows None: the hook is a no-op
            dna=lambda: unet.propagation(feats, masks, fw, bw),
            dna_official=lambda: official(feats, masks, fw, bw),
        ), args.repeats, args.warmup, device)
    shape = f"{b}x{f}x8x{h}x{w}"
    full = rep.timing("unet_step", "fffvdi_unet", t["fffvdi"], shape=shape, dtype=args.dtype)
    plain = rep.timing("unet_step", "plain_svd_unet", t["plain"], shape=shape, dtype=args.dtype)
    dna = rep.timing("unet_step", "dna_module_alone", t["dna"], shape=f"{b}x{f}x{feats.shape[2]}x{h}x{w}")
    dna_off = rep.timing("unet_step", "dna_official_alone", t["dna_official"], shape=f"{b}x{f}x{feats.shape[2]}x{h}x{w}")
    rep.add("unet_step", "propagation_overhead", 100.0 * (full / plain - 1.0), "%", note="fffvdi/plain - 1")
    rep.add("unet_step", "dna_official_over_unet", 100.0 * dna_off / plain, "%", note="official module / plain UNet",
            params_m=round(presets.count_params_m(official), 3))
    rep.add("unet_step", "dna_over_unet", 100.0 * dna / plain, "%", note="dna alone / plain UNet")
    rep.add("unet_step", "unet_params", presets.count_params_m(unet.unet), "M")
    rep.add("unet_step", "dna_params", presets.count_params_m(unet.propagation), "M")
    rep.add("unet_step", "cuda_peak", bm.cuda_peak_mb(device), "MiB")


def bench_flow(args, device: torch.device, rep: bm.Report) -> None:
    """Flow estimation (both directions) and completion per frame pair at the section's size."""
    from fffvdi.flow.completion import build_flow_completer
    from fffvdi.flow.estimators import DISFlow, RAFTFlow

    f, size = args.flow_frames, f"{args.height}x{args.width}"
    video = presets.SyntheticVideo(f, args.height, args.width)
    frames = torch.from_numpy(video.read_frames(0, f)).permute(0, 3, 1, 2)[None].float().div(255).to(device)
    masks = torch.from_numpy(video.read_masks(0, f)).float()[None, :, None].to(device)  # [1, F, 1, H, W]
    estimators = dict(dis=DISFlow("medium"))
    for variant in ("small", "large"):  # random weights: RAFT's cost is the same as with trained ones
        estimators[f"raft_{variant}"] = RAFTFlow(variant, random_init=True, iters=args.raft_iters, device=device)
    for name, est in estimators.items():
        # On CPU nothing is compiled or autotuned on a first call, and a RAFT run there takes seconds: no warm-up.
        warmup = 0 if device.type == "cpu" and name != "dis" else args.warmup
        t = bm.time_fn(lambda: est(frames), args.repeats, warmup, device)
        rep.timing("flow", name, t, per=f - 1, unit="ms/frame", size=size, note="fw+bw flow of one frame pair",
                   **({"iters": args.raft_iters} if name != "dis" else {}))
    fw, bw = estimators["dis"](frames)
    completers = {name: build_flow_completer(name) for name in ("smooth", "cv2_inpaint")}
    # ProPainter's recurrent network (5.08 M params), random weights: its cost does not depend on their values.
    completers["propainter"] = build_flow_completer("propainter", weights="random")
    for name, completer in completers.items():
        clip, detail = (fw, bw, masks), {}
        if name == "propainter":  # it aligns each frame to two predecessors: time it on >= 8 pairs (DIS flows tiled)
            n = -(-8 // (f - 1))
            clip = (fw.repeat(1, n, 1, 1, 1), bw.repeat(1, n, 1, 1, 1),
                    torch.cat([masks[:, :-1].repeat(1, n, 1, 1, 1), masks[:, -1:]], 1))
            detail = dict(pairs=n * (f - 1), params_m=round(presets.count_params_m(completer.net), 3))
        t = bm.time_fn(lambda: completer.complete_pair(*clip), args.repeats, args.warmup, device)
        rep.timing("flow", f"completion_{name}", t, per=clip[0].shape[1], unit="ms/frame", size=size, note="fw+bw",
                   **detail)


def bench_vae(args, device: torch.device, dtype: torch.dtype, rep: bm.Report) -> None:
    """VAE encode and chunked temporal decode per frame."""
    vae = presets.build_components(args.preset, device, dtype, parts=("vae",)).vae
    f, chunk = args.frames, args.chunk
    video = presets.SyntheticVideo(f, args.height, args.width)
    x = torch.from_numpy(video.read_frames(0, f)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device, dtype)
    bm.reset_cuda_peak(device)
    with torch.no_grad():
        encode = lambda: torch.cat([vae.encode(p).latent_dist.mode() for p in x.split(chunk)])  # noqa: E731
        z = encode() / vae.config.scaling_factor
        decode = lambda: [vae.decode(p, num_frames=p.shape[0]).sample for p in z.split(chunk)]  # noqa: E731
        t = bm.time_interleaved(dict(encode=encode, decode=decode), args.repeats, args.warmup, device)
    size = f"{args.height}x{args.width}"
    rep.timing("vae", "encode", t["encode"], per=f, unit="ms/frame", size=size, chunk=chunk)
    rep.timing("vae", "decode", t["decode"], per=f, unit="ms/frame", size=size, chunk=chunk)
    rep.add("vae", "vae_params", presets.count_params_m(vae), "M")
    rep.add("vae", "cuda_peak", bm.cuda_peak_mb(device), "MiB")


def bench_train_step(args, device: torch.device, rep: bm.Report) -> None:
    """EDM loss forward + backward + AdamW step on the FFF-VDI UNet (temporal layers + DNA trainable)."""
    from fffvdi.train.config import DEFAULT_TRAINABLE
    from fffvdi.train.trainable import select_trainable

    unet = presets.build_components(args.preset, device, torch.float32, parts=("unet",)).unet
    params = select_trainable(unet, DEFAULT_TRAINABLE)
    unet.train()
    if args.grad_ckpt:
        unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2)
    f, h, w = args.frames, args.height // 8, args.width // 8
    half = device.type == "cuda" and args.dtype != "float32"  # mixed precision on GPU (fp32 master weights)
    step = train_step(unet, opt, f, h, w, device, getattr(torch, args.dtype) if half else None)

    bm.reset_cuda_peak(device)
    t = bm.time_fn(step, args.repeats, args.warmup, device)
    rep.timing("train_step", "forward_backward_adamw", t, shape=f"1x{f}x8x{h}x{w}",
               precision=f"amp-{args.dtype}" if half else "float32", grad_ckpt=args.grad_ckpt)
    rep.add("train_step", "trainable_params", sum(p.numel() for p in params) / 1e6, "M")
    rep.add("train_step", "cuda_peak", bm.cuda_peak_mb(device), "MiB")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._case is not None:
        print(CASE_TAG + json.dumps(run_case(json.loads(args._case))), flush=True)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False; use --device cpu", file=sys.stderr)
        return 2
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    meta = dict(machine=bm.machine_info(device), versions=bm.versions(), git=bm.git_info(REPO),
                load_average_start=os.getloadavg(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    rep = bm.Report()
    runners = dict(
        unet_step=lambda: bench_unet_step(args, device, dtype, rep), flow=lambda: bench_flow(args, device, rep),
        vae=lambda: bench_vae(args, device, dtype, rep), inference=lambda: bench_inference(args, rep),
        crop=lambda: bench_crop(args, rep),
        train_step=lambda: bench_train_step(args, device, rep), data_loader=lambda: bench_data_loader(args, rep),
        propagate=lambda: bench_propagate(args, rep),
    )
    started = time.perf_counter()
    for section in args.sections:
        t0 = time.perf_counter()
        fresh = device.type == "cpu" and bm.reset_peak_rss()
        runners[section]()
        if fresh and section not in ("inference", "crop"):  # their cases report their own subprocess peaks
            rep.add(section, "peak_rss", bm.peak_rss_since_reset_mb(), "MiB", note="whole process, during this section")
        print(f"[{section}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    meta.update(load_average_end=os.getloadavg(), total_s=round(time.perf_counter() - started, 1))
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    out = dict(settings=settings, **meta, notes=[
        "weights are random (speed does not depend on their values)",
        "timings: median of `repeats` runs after `warmup` runs; CPU numbers are noisy when the machine is shared "
        "(see load_average_*)",
    ], results=rep.results)
    print(rep.table())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
