"""What the web app runs: annotations from a box or a brush, the tracking and inference steps, result zips."""
from __future__ import annotations

import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from fffvdi.app.jobs import Step
from fffvdi.errors import InputError
from fffvdi.inpaint.methods import METHODS as INFERENCE_METHODS
from fffvdi.tracking.annotation import box_mask

METHODS = tuple(sorted(INFERENCE_METHODS, key=lambda m: m == "fffvdi"))  # the weight-free ones first
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
INFERENCE_SCRIPT, MAKE_MASKS_SCRIPT = SCRIPTS / "inference.py", SCRIPTS / "make_masks.py"


@dataclass
class RunSettings:
    """The knobs the page offers; each maps onto one flag or config key of scripts/inference.py."""

    method: str = "propagate"  # propagate | telea | fffvdi
    checkpoint: str = ""  # fffvdi: fine-tuned UNet folder (--checkpoint)
    pretrained: str = ""  # fffvdi: SVD hub id or local folder (model.pretrained); empty = the config default
    steps: int = 25  # sampling.num_steps
    seed: int = 42  # sampling.seed
    dilation: int = 4  # mask.dilate (3x3 cross iterations)
    window_frames: int = 25  # window.num_frames

    def check(self) -> None:
        """InputError naming the field and the fix, before anything is queued."""
        if self.method not in METHODS:
            raise InputError(f"method {self.method!r} is not one of {', '.join(METHODS)}; pick one")
        for name, value, low in (("steps", self.steps, 1), ("dilation", self.dilation, 0),
                                 ("window frames", self.window_frames, 2), ("seed", self.seed, 0)):
            if value is None or int(value) != value or value < low:
                raise InputError(f"{name} must be a whole number >= {low} (got {value}); correct the field")
        if self.method == "fffvdi" and not self.checkpoint.strip():
            raise InputError("fffvdi needs a checkpoint: enter the unet/ folder scripts/train.py saves, or pick "
                             "propagate for the weight-free result")


def box_from_clicks(first: tuple[int, int], second: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the box with two clicked (x, y) corners, both pixels inside."""
    x0, x1 = sorted((int(first[0]), int(second[0])))
    y0, y1 = sorted((int(first[1]), int(second[1])))
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def clicked_pixel(pointer: str | None, index: Any, size: tuple[int, int]) -> tuple[int, int]:
    """(x, y) of the clicked frame pixel: the page's "x,y" under the pointer, else Gradio's index; inside `size`."""
    try:
        x, y = (int(v) for v in (pointer or "").split(","))
    except ValueError:  # no pointer reading (another browser, a keyboard): Gradio's rounded index
        x, y = int(index[0]), int(index[1])
    return min(max(x, 0), size[1] - 1), min(max(y, 0), size[0] - 1)


def box_annotation(box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """bool [H, W] mask of box (x, y, w, h) clipped to the frame; InputError if nothing of it is inside."""
    try:
        return box_mask(box, size)  # the clipping rule of scripts/make_masks.py --box
    except InputError:  # its message names CLI flags; the page has corners and fields
        x, y, w, h = (int(v) for v in box)
        raise InputError(f"box x={x} y={y} w={w} h={h} covers no pixel of the {size[1]}x{size[0]} frame; "
                         "click two corners on the frame or fix the numbers") from None


def brush_annotation(editor_value: Optional[dict], size: tuple[int, int]) -> np.ndarray:
    """bool [H, W] mask of everything painted on the image editor's layers (their alpha > 0)."""
    layers = (editor_value or {}).get("layers") or []
    out = np.zeros(size, bool)
    for layer in layers:
        layer = np.asarray(layer)
        if layer.ndim != 3 or layer.shape[2] != 4:
            continue
        painted = layer[..., 3] > 0  # [h, w]
        if painted.shape != size:
            painted = cv2.resize(painted.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
        out |= painted
    if not out.any():
        raise InputError("nothing is brushed; paint over the object on the frame (or use a box)")
    return out


def save_annotation(mask: np.ndarray, path: Path) -> Path:
    """Write a bool [H, W] annotation as a black/white PNG."""
    cv2.imwrite(str(path), mask.astype(np.uint8) * 255)
    return path


def _script(path: Path) -> str:
    """A script of the checkout the app runs from; InputError naming the fix when it is missing."""
    if not path.is_file():
        raise InputError(f"{path} is missing; run the app from a checkout of fffvdi (pip install -e .)")
    return str(path)


def tracking_step(frames_dir: Path, annotation: Path, frame: int, out_dir: Path, fps: float, total: int) -> Step:
    """scripts/make_masks.py: track the annotation PNG through the clip into `out_dir` (masks + masks_preview.mp4)."""
    argv = [sys.executable, _script(MAKE_MASKS_SCRIPT), "--video", str(frames_dir), "--mask-image", str(annotation),
            "--frame", str(int(frame)), "--output", str(out_dir), "--fps", f"{fps:g}"]
    return Step("tracking masks", argv, total=total)


def inference_step(frames_dir: Path, masks_dir: Path, out_dir: Path, fps: float, total: int,
                   settings: RunSettings) -> Step:
    """scripts/inference.py on the session's frames and masks into `out_dir`; progress = PNGs in OUT.partial/frames."""
    s = settings
    argv = [sys.executable, _script(INFERENCE_SCRIPT), "--video", str(frames_dir), "--mask", str(masks_dir),
            "--output", str(out_dir), "--method", s.method, "--fps", f"{fps:g}",
            f"sampling.num_steps={int(s.steps)}", f"sampling.seed={int(s.seed)}", f"mask.dilate={int(s.dilation)}",
            f"window.num_frames={int(s.window_frames)}"]
    if s.method == "fffvdi":
        argv += ["--checkpoint", s.checkpoint.strip()]
        if s.pretrained.strip():
            argv.append(f"model.pretrained={s.pretrained.strip()}")
    partial = out_dir.with_name(out_dir.name + ".partial") / "frames"
    return Step(f"inpainting ({s.method})", argv, total=total, progress_dir=partial)


def zip_frames(frames_dir: Path, zip_path: Path) -> Path:
    """A zip of the result's PNG frames (flat, their own names), stored without recompression."""
    files = sorted(frames_dir.glob("*.png"))
    if not files:
        raise InputError(f"no PNG frames in {frames_dir}; the run kept none (output.save_frames=false?)")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        for f in files:
            zf.write(f, arcname=f.name)
    return zip_path
