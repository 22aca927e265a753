"""Write a tiny, seeded, random SVD in diffusers layout: `python scripts/make_tiny_model.py OUT_DIR`."""
import argparse
import sys
from pathlib import Path

from fffvdi.models.tiny import save_tiny_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", help="folder to create (model_index.json, unet/, vae/, image_encoder/, ...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    args = parser.parse_args()
    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"error: {out} exists and is not empty; pass --overwrite or choose another folder", file=sys.stderr)
        return 2
    save_tiny_model(out, seed=args.seed)
    print(f"tiny SVD written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
