"""GPU check: `python scripts/gpu_check.py --out results/gpu_check` (about 5 minutes on one H100/H200).

SVD-XT's architecture with random weights (speed and memory do not depend on their values):
- inference: one whole FFF-VDI window (flows, VAE, CLIP, first-frame filling, guided Euler sampling, decode) at
  512x256x25 and 1024x576x25, in float16 and bfloat16, per `memory.compile` setting (none / module / unet). Each
  case runs with 2 and with 4 Euler steps, so s/step = (t4 - t2) / 2 and the 25-step window time = t2 + 23 s/step;
  peak GPU memory of the 4-step run; the first run (compilation included) is timed apart;
- train: EDM loss forward + backward + optimizer step at 512x256x25 with gradient checkpointing and fp16 autocast,
  per configuration: full fine-tuning with the `official` and the `light` propagation module, LoRA, LoRA + 8-bit
  AdamW (peak GPU memory, s/step, trainable parameters);
- dna: the UNet step with and without the propagation module (its overhead ratio), CFG batch 2, at both sizes and
  dtypes per `memory.compile` setting (`light`; `official` eager only), with the host syncs one step makes (0 is
  the goal: a sync stalls the GPU queue) and peak GPU memory.
Writes gpu_check.json and gpu_check.md (the table README shows) into --out after every row, so a run cut short
keeps what it measured. A row that fails (out of memory, bitsandbytes missing) records its error and the rest go on.
`--device cpu --tiny` runs every code path with the tiny random model in about a minute (a CI test); there the
compiled rows use torch.compile's `eager` backend (graph capture without code generation: inductor on a CPU takes
minutes per graph), `--compile-backend` picks another.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: never touch the network

import torch

from fffvdi.bench import measure as bm
from fffvdi.bench import presets
from fffvdi.bench.model import latent_conditions, train_step, unet_inputs
from fffvdi.models.unet import COMPILE_TARGETS

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("dna", "inference", "train")
TRAIN_CONFIGS = (  # (row name, trainable mode, propagation arch, optimizer, frames per step; None = the clip's)
    ("full_official", "full", "official", "adamw", None),
    ("full_light", "full", "light", "adamw", None),
    ("lora16_light", "lora", "light", "adamw", None),
    ("lora16_adamw8bit_light", "lora", "light", "adamw8bit", None),
    ("lora16_adamw8bit_light_14f", "lora", "light", "adamw8bit", 14),  # train.frames_per_step=14
)


def sizes(tiny: bool) -> dict:
    """Frames x height x width of each section; --tiny shrinks them so CPU runs take seconds."""
    if tiny:
        return dict(infer=[(4, 64, 128)], steps=(1, 8), train=(4, 64, 128), dna=[(4, 64, 128)], repeats=2)
    return dict(infer=[(25, 256, 512), (25, 576, 1024)], steps=(2, 4), train=(25, 256, 512),
                dna=[(25, 256, 512), (25, 576, 1024)], repeats=3)


class Rows:
    """Rows of the check, written to JSON + markdown after each one."""

    def __init__(self, out: Path | None, meta: dict) -> None:
        self.out, self.meta, self.rows = out, meta, []

    def add(self, section: str, name: str, **values) -> None:
        row = dict(section=section, name=name, **{k: (round(v, 6) if isinstance(v, float) else v)
                                                   for k, v in values.items()})
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "gpu_check.json").write_text(json.dumps(dict(**self.meta, rows=self.rows), indent=2) + "\n")
            (self.out / "gpu_check.md").write_text(self.markdown() + "\n")

    def markdown(self) -> str:
        """One line per row: the measured values, or the error."""
        lines = ["| section | row | values |", "|---|---|---|"]
        for r in self.rows:
            vals = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("section", "name"))
            lines.append(f"| {r['section']} | {r['name']} | {vals} |")
        return "\n".join(lines)


def guarded(rows: Rows, section: str, name: str, fn: Callable[[], dict]) -> None:
    """Run one row; an exception becomes the row's `error` (out of memory included) and the check goes on."""
    gc.collect()  # the previous row's model may sit in reference cycles: free it before this row's peak
    torch._dynamo.reset()  # each row compiles afresh: no recompile limit reached across rows, no stale graphs
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        rows.add(section, name, **fn())
    except Exception as err:  # noqa: BLE001 - a check reports every failure and continues
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        rows.add(section, name, error=f"{type(err).__name__}: {first}")
        traceback.print_exc(limit=3)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `repeats` runs after `warmup` runs."""
    return bm.time_fn(fn, repeats, warmup, device).median_s


def components(preset: str, device: torch.device, dtype: torch.dtype, arch: str = "light", parts=("unet",)):
    """Random-weight SVD components of `preset`, the UNet wrapped with the `arch` propagation module."""
    from fffvdi.models.propagation import build_propagation
    from fffvdi.models.unet import FFFVDIUNet

    comps = presets.build_components(preset, device, dtype, parts=parts)
    if arch != "light":
        channels = comps.unet.unet.conv_in.out_channels
        torch.manual_seed(3)
        dna = build_propagation(channels, arch=arch).to(device, dtype).requires_grad_(False)
        comps.unet = FFFVDIUNet(comps.unet.unet, dna)
    return comps


def check_inference(args, device: torch.device, rows: Rows) -> None:
    """Whole FFF-VDI window per case, dtype and memory.compile: s/step from 2 vs 4 steps, 25-step window, peak
    memory."""
    from fffvdi.config import load_config
    from fffvdi.inpaint.config import InferenceConfig
    from fffvdi.inpaint.pipeline import FFFVDIPipeline

    s = sizes(args.tiny)
    lo, hi = s["steps"]
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        comps = components(args.preset, device, dtype, parts=("unet", "vae", "image_encoder"))
        for (frames, h, w), target in [(size, c) for size in s["infer"] for c in args.compile]:
            def run() -> dict:
                video = presets.SyntheticVideo(frames, h, w)
                x, m = video.read_frames(0, frames), video.read_masks(0, frames)
                cfg = load_config(InferenceConfig, None, [f"window.height={h}", f"window.width={w}",
                                                          f"window.num_frames={frames}", "window.decode_chunk_size=8",
                                                          f"memory.compile={target}"])
                pipe = FFFVDIPipeline(comps, cfg, device, dtype)
                comps.unet.set_compile(target, backend=args.compile_backend)  # the pipeline's, on this backend
                try:
                    cfg.sampling.num_steps = lo
                    first = timed(lambda: pipe(x, m, torch.Generator().manual_seed(0)), device, 1, 0)  # compiles
                    t = {}
                    for steps in (lo, hi):  # the peak is the last (longer) run's
                        cfg.sampling.num_steps = steps
                        bm.reset_cuda_peak(device)
                        t[steps] = timed(lambda: pipe(x, m, torch.Generator().manual_seed(0)), device, 1, 0)
                finally:
                    comps.unet.set_compile("none")
                per_step = (t[hi] - t[lo]) / (hi - lo)
                window = t[lo] + (25 - lo) * per_step
                return dict(size=f"{w}x{h}x{frames}", dtype=dtype_name, compile=target, s_per_step=per_step,
                            window_s_25_steps=window, s_per_frame_25_steps=window / frames,
                            fixed_s=t[lo] - lo * per_step, first_run_s=first, peak_mib=bm.cuda_peak_mb(device))
            guarded(rows, "inference", f"window_{w}x{h}x{frames}_{dtype_name}_{target}", run)
        comps = None  # free this dtype's model before the next one is built


def check_dna(args, device: torch.device, rows: Rows) -> None:
    """UNet step with vs without the propagation module (classifier-free-guided batch of 2) per size, dtype and
    memory.compile; the `official` layout eager only (its compiled rows would repeat light's story at 5x the time)."""
    from fffvdi.bench.measure import HostSyncCounter

    b = 2
    cases = [("light", size, d, c) for size in sizes(args.tiny)["dna"] for d in args.dtypes for c in args.compile]
    cases += [("official", sizes(args.tiny)["dna"][0], args.dtypes[0], "none")]
    for arch, (frames, h, w), dtype_name, target in cases:
        def run() -> dict:
            dtype = getattr(torch, dtype_name)
            lh, lw = h // 8, w // 8
            unet = components(args.preset, device, dtype, arch=arch).unet
            sample, timestep, embeds, ids = unet_inputs(unet, b, frames, lh, lw, device, dtype)
            masks, fw, bw = latent_conditions(b, frames, lh, lw, 8, device)
            with torch.no_grad():
                fns = dict(fffvdi=lambda: unet(sample, timestep, embeds, ids, masks, fw, bw),
                           plain=lambda: unet(sample, timestep, embeds, ids))
                fns["fffvdi"]()  # warm-up: the counted call is a steady one
                with HostSyncCounter() as syncs:  # eager: a compiled graph adds none, and would retrace under the mode
                    fns["fffvdi"]()
                unet.set_compile(target, backend=args.compile_backend)
                for fn in fns.values():  # compile (when asked) and warm up outside the timing
                    fn()
                bm.reset_cuda_peak(device)
                t = bm.time_interleaved(fns, sizes(args.tiny)["repeats"], 0, device)
            full, plain = t["fffvdi"].median_s, t["plain"].median_s
            return dict(size=f"{w}x{h}x{frames}", latent=f"{b}x{frames}x8x{lh}x{lw}", dtype=dtype_name, compile=target,
                        fffvdi_s=full, plain_s=plain, overhead_pct=100 * (full / plain - 1), host_syncs=syncs.count,
                        module_params_m=presets.count_params_m(unet.propagation), peak_mib=bm.cuda_peak_mb(device))
        guarded(rows, "dna", f"unet_step_{arch}_{w}x{h}x{frames}_{dtype_name}_{target}", run)


def check_train(args, device: torch.device, rows: Rows) -> None:
    """One optimizer step per training configuration: peak memory, s/step, trainable parameters."""
    from omegaconf import OmegaConf

    from fffvdi.train.config import TrainConfig
    from fffvdi.train.setup import build_optimizer
    from fffvdi.train.trainable import select_trainable

    clip, h, w = sizes(args.tiny)["train"]
    h, w = h // 8, w // 8
    for name, mode, arch, optim, per_step in TRAIN_CONFIGS:
        frames = min(per_step or clip, clip)
        if optim == "adamw8bit" and device.type != "cuda":
            rows.add("train", name, skipped="bitsandbytes' 8-bit AdamW kernels need a CUDA GPU")
            continue

        def run() -> dict:
            cfg = OmegaConf.structured(TrainConfig)
            cfg.optim.name = optim
            bm.reset_cuda_peak(device)
            unet = components(args.preset, device, torch.float32, arch=arch).unet
            if mode == "lora":
                from fffvdi.train.lora import apply_lora

                cfg.lora.rank = 16
                params = apply_lora(unet, cfg.lora)
            else:
                params = select_trainable(unet, list(cfg.trainable))
            unet.train()
            unet.enable_gradient_checkpointing()
            opt = build_optimizer(params, cfg.optim)
            half = device.type == "cuda"
            step = train_step(unet, opt, frames, h, w, device, torch.float16 if half else None)
            sec = timed(step, device, sizes(args.tiny)["repeats"])
            return dict(size=f"{w * 8}x{h * 8}x{frames}", mode=mode, propagation=arch, optimizer=optim,
                        precision="amp-fp16" if half else "float32", grad_ckpt=True, s_per_step=sec,
                        trainable_params_m=sum(p.numel() for p in params) / 1e6, peak_mib=bm.cuda_peak_mb(device))
        guarded(rows, "train", name, run)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny random model and sizes (CPU smoke run of every path)")
    p.add_argument("--out", default="results/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--dtypes", default="float16,bfloat16", help="inference and dna dtypes")
    p.add_argument("--compile", default=",".join(COMPILE_TARGETS),
                   help=f"memory.compile settings to measure, comma-separated of {','.join(COMPILE_TARGETS)}")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend of the compiled rows (default: inductor on cuda, eager on cpu)")
    args = p.parse_args(argv)
    args.sections = [s for s in args.only.split(",") if s]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"--only: unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.compile = [c for c in args.compile.split(",") if c]
    bad = [c for c in args.compile if c not in COMPILE_TARGETS]
    if bad:
        p.error(f"--compile: unknown setting(s) {bad}; choose from {','.join(COMPILE_TARGETS)}")
    args.compile_backend = args.compile_backend or ("inductor" if args.device == "cuda" else "eager")
    if args.device == "cpu":
        args.dtypes = ["float32"]  # half-precision convolutions are not a CPU path worth timing
    args.preset = "tiny" if args.tiny else "svd-xt"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; run on a GPU machine or pass --device cpu --tiny",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    meta = dict(machine=bm.machine_info(device), versions=bm.versions(), git=bm.git_info(REPO), preset=args.preset,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    rows = Rows(Path(args.out) if args.out else None, meta)
    runners = dict(dna=check_dna, inference=check_inference, train=check_train)
    started = time.perf_counter()
    for section in args.sections:
        t0 = time.perf_counter()
        runners[section](args, device, rows)
        print(f"[{section}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    print(rows.markdown())
    print(f"gpu check done in {time.perf_counter() - started:.0f} s; wrote {args.out}", file=sys.stderr)
    return 1 if any("error" in r for r in rows.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
