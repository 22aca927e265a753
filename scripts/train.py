"""Fine-tune FFF-VDI: `accelerate launch scripts/train.py --config configs/train.yaml [key=value ...]`.

Writes into checkpoint.output_dir: config.yaml (resolved), checkpoint-N/ (accelerate state + unet/ + config.yaml),
logs/ (TensorBoard), validation/step-N.mp4 (masked input | result | ground truth) and, at the end, unet/
(EMA weights if enabled), loadable with `scripts/inference.py --checkpoint OUTPUT_DIR/unet`.

Resuming (checkpoint.resume_from_checkpoint=latest|PATH) restores weights, optimizer, LR schedule and EMA, and
skips the batches already seen in the current epoch (accelerator.skip_first_batches; the clip order of an epoch is a
function of (seed, epoch)). All training noise is drawn from a generator seeded by (seed, micro-step, process), so a
resumed run reproduces the uninterrupted one exactly.

With lora.enabled, only peft LoRA adapters (+ the propagation module) train; checkpoints hold those alone
(checkpoint-N/lora/) and the final unet/ has them merged (lora.merge_on_save=false: OUTPUT_DIR/lora/, merged later by
scripts/merge_lora.py). configs/train_24gb.yaml is the one-24-GB-GPU recipe (LoRA, 8-bit AdamW, conditioning cache).

A bad config, path or model source ends the run with one `error: ...` line (exit 2), the last line of the output. Under
`accelerate launch` the launcher reports any failed child after the child has exited, so nothing the child prints can
come after it: `accelerate launch --cpu -q ...` (one process) drops that traceback and leaves the error line last (exit
1); without -q the error line says so. With --multi_gpu, torch's launcher adds a failure summary even with -q.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from fffvdi.config import load_config
from fffvdi.errors import FFFVDIError
from fffvdi.train.checks import check_train_config
from fffvdi.train.config import TrainConfig
from fffvdi.train.loop import TrainResult, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (defaults: fffvdi/train/config.py)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.max_steps=10")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> TrainResult:
    """Parse the command line, check the config (every bad value, path or model source fails here, before a folder
    is written or a model loaded) and run the whole training (fffvdi/train/loop.py)."""
    args = parse_args(argv)
    return train(load_config(TrainConfig, args.config, args.overrides, check=check_train_config))


def launcher_note() -> str:
    """' (...use accelerate launch -q...)' when this process was started by `accelerate launch` without -q, which
    prints a traceback of its own after a failed child; '' otherwise."""
    try:
        import psutil  # an accelerate dependency

        parent = psutil.Process(os.getppid()).cmdline()
    except Exception:  # noqa: BLE001 - no parent to inspect: no note
        return ""
    script = Path(sys.argv[0]).name
    at = next((i for i, arg in enumerate(parent) if Path(arg).name == script), None)
    launcher = parent[:at] if at is not None else []  # the parent's words before this script's path
    accelerate = ("launch" in launcher and any(Path(arg).name == "accelerate" for arg in launcher)
                  or "accelerate.commands.launch" in launcher)  # `accelerate launch` or `python -m ...launch`
    if not accelerate or {"-q", "--quiet"} & set(launcher):
        return ""
    return " (accelerate's traceback below only repeats this error; `accelerate launch -q ...` leaves it out)"


def fail(message: str) -> None:
    """Exit 2 after one `error: ...` line on stderr."""
    sys.stderr.write(f"error: {message}{launcher_note()}\n")
    sys.stderr.flush()
    sys.exit(2)


if __name__ == "__main__":
    try:
        main()
    except FFFVDIError as err:
        fail(str(err))
    except torch.cuda.OutOfMemoryError:
        fail("out of GPU memory; set train.gradient_checkpointing=true, lower data.size / train.frames_per_step, or use "
             "configs/train_24gb.yaml (LoRA, 8-bit AdamW, cache, offload); resume with "
             "checkpoint.resume_from_checkpoint=latest")
