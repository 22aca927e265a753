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
"""
from __future__ import annotations

import argparse
import sys

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


if __name__ == "__main__":
    try:
        main()
    except FFFVDIError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except torch.cuda.OutOfMemoryError:
        print("error: out of GPU memory; set train.gradient_checkpointing=true, lower data.size / "
              "train.frames_per_step, or use configs/train_24gb.yaml (LoRA, 8-bit AdamW, cache, offload); resume with "
              "checkpoint.resume_from_checkpoint=latest",
              file=sys.stderr)
        sys.exit(2)
