"""Merge LoRA adapters into their base UNet: `python scripts/merge_lora.py --checkpoint RUN/lora --output RUN/unet`.

--checkpoint takes a LoRA folder (OUTPUT_DIR/lora written with lora.merge_on_save=false, or
OUTPUT_DIR/checkpoint-N/lora) or a folder holding one (OUTPUT_DIR, OUTPUT_DIR/checkpoint-N). The base UNet is
the one named in its base.json (the run's model.pretrained / model.checkpoint) unless --pretrained or
--base-checkpoint say otherwise. The output is a plain FFF-VDI UNet folder (no peft needed), loadable with
`scripts/inference.py --checkpoint OUTPUT`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fffvdi.errors import FFFVDIError, InputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="LoRA folder, or a run / checkpoint-N folder holding lora/")
    p.add_argument("--output", required=True, help="folder for the merged FFF-VDI UNet")
    p.add_argument("--pretrained", default=None, help="SVD folder or hub id of the base (default: from base.json)")
    p.add_argument("--base-checkpoint", default=None, help="FFF-VDI UNet folder the adapters were trained on "
                   "(default: from base.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    return p.parse_args(argv)


def lora_folder(path: str | Path) -> Path:
    """The folder holding adapter_model.safetensors: `path` itself or `path/lora`."""
    from fffvdi.train.lora import ADAPTER_WEIGHTS

    path = Path(path).expanduser()
    for folder in (path, path / "lora"):
        if (folder / ADAPTER_WEIGHTS).is_file():
            return folder
    raise InputError(f"--checkpoint {path}: no LoRA adapters ({ADAPTER_WEIGHTS}) in it or in its lora/; pass "
                     "OUTPUT_DIR/lora or OUTPUT_DIR/checkpoint-N")


def main(argv: list[str] | None = None) -> Path:
    """Load base + adapters, merge, save the merged UNet atomically; returns the output folder."""
    args = parse_args(argv)
    folder = lora_folder(args.checkpoint)
    out = Path(args.output).expanduser()
    if out.exists() and not args.overwrite:
        raise InputError(f"--output {out} already exists; pass --overwrite to replace it or choose another folder")
    from fffvdi.train.checkpointing import write_folder
    from fffvdi.train.lora import load_lora_folder, merge_lora

    unet = merge_lora(load_lora_folder(folder, args.pretrained, args.base_checkpoint))
    write_folder(out, unet.save_pretrained)  # a kill leaves the old output or the new one
    print(f"merged {folder} into {out}")
    return out


if __name__ == "__main__":
    try:
        main()
    except FFFVDIError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
