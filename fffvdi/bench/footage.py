"""Real-footage cases for the `propagate` benchmark, built from the clips Debian's `opencv-doc` package ships.

The clips stay out of the repository: `find_footage` looks in the installed package, then in a cache folder, and
otherwise downloads the package with `apt-get download` and unpacks it there (`dpkg-deb -x`). Each case hides a
region of a real clip whose true content is known (the clip itself is the ground truth):

- `cross2`, `cross6`: a box 1/8 of the width wide crossing the frame at 2 or 6 px/frame (a moving occluder);
- `fixed`: a fixed box (a logo or watermark): only what moves through it is ever revealed;
- `object`: a real object (the cup of `cup.mp4`, cut out by its dark pixels) pasted with a soft edge over another
  clip and moving along a curve; its mask is where it is opaque, so its soft edge lies outside the mask, as with a
  real segmentation (this is what `mask.dilate` is for).
"""
from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from fffvdi.errors import InputError

DOC = Path("usr/share/doc/opencv-doc")
CLIPS = {  # name -> (path under the package's doc folder, first frame looked at)
    "vtest": ("examples/data/vtest.avi", 100),  # static camera, people walking (768x576)
    "tree": ("examples/data/tree.avi", 0),  # hand-held camera on foliage (320x240)
    "megamind": ("examples/data/Megamind.avi", 60),  # animated film, camera moves, cuts (720x528)
    "box": ("opencv4/html/box.mp4.gz", 150),  # hand-held box, fast moving content (640x480)
    "cup": ("opencv4/html/cup.mp4.gz", 60),  # a cup turned by a hand (640x480)
}
KINDS = ("cross2", "cross6", "fixed", "object")
CUT = 25.0  # mean absolute difference (0..255) between neighbouring frames that marks a scene cut


def find_footage(cache: Optional[Path] = None) -> Path:
    """The `opencv-doc` doc folder: installed, cached, or downloaded and unpacked into `cache` (Debian only)."""
    cache = Path(cache or Path.home() / ".cache" / "fffvdi" / "opencv-doc")
    for root in (Path("/") / DOC, cache / DOC):
        if all((root / rel).is_file() for rel, _ in CLIPS.values()):
            return root
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise InputError("the real-footage cases need Debian's opencv-doc clips: install it (apt-get install opencv-doc)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        got = subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("opencv-doc_*.deb"))
        if got.returncode != 0 or not debs:
            raise InputError(f"could not download opencv-doc ({got.stderr.strip()[-200:]}); install it with apt-get")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(cache)], check=True)
    return cache / DOC


def read_clip(root: Path, name: str, frames: int, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """`frames` RGB uint8 frames `[F, H, W, 3]` of clip `name` from its first frame without a cut, resized to `size`."""
    rel, start = CLIPS[name]
    path = root / rel
    if path.suffix == ".gz":  # unpacked once beside the cache, since OpenCV reads files only
        plain = Path(tempfile.gettempdir()) / "fffvdi-footage" / path.stem
        if not plain.is_file():
            plain.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(path) as src, open(plain.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            plain.with_suffix(".part").rename(plain)
        path = plain
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < start + frames + 200:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    video = np.stack(out)
    diffs = np.abs(np.diff(video[:, ::4, ::4].astype(np.int16), axis=0)).mean((1, 2, 3))  # [F-1]
    s = start
    while s + frames <= len(video) and (diffs[s : s + frames - 1] > CUT).any():
        s += 1
    if s + frames > len(video):
        raise InputError(f"{path}: no {frames} frames without a scene cut after frame {start}")
    clip = video[s : s + frames]
    if size is not None and clip.shape[1:3] != size:
        clip = np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in clip])
    return clip


def box_masks(kind: str, frames: int, size: tuple[int, int]) -> np.ndarray:
    """Masks `[F, H, W]` bool of a box 1/8 of the width wide: crossing at 2 or 6 px/frame, or fixed."""
    h, w = size
    side = w // 8
    top = (h - side) // 2
    masks = np.zeros((frames, h, w), bool)
    if kind == "fixed":
        left = (w * 5) // 8  # off-centre, where a logo sits
        masks[:, top : top + side, left : left + side] = True
        return masks
    speed = {"cross2": 2, "cross6": 6}[kind]
    travel = speed * (frames - 1)
    start = max((w - side - travel) // 2, 0)  # the path centred in the frame
    for t in range(frames):
        left = start + speed * t
        masks[t, top : top + side, left : left + side] = True
    return masks


def cup_object(root: Path, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The cup of `cup.mp4` cut out by its dark pixels: `(rgb [h, w, 3] uint8, alpha [h, w] float in [0, 1])`."""
    frame = read_clip(root, "cup", 1)[0]
    dark = (frame.max(-1) < 70).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(dark)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = stats[biggest, :4]
    shape = (labels[y : y + bh, x : x + bw] == biggest).astype(np.float32)
    scale = height / bh
    new = (max(int(round(bw * scale)), 3), height)
    rgb = cv2.resize(frame[y : y + bh, x : x + bw], new, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(shape, new, interpolation=cv2.INTER_AREA)
    alpha = cv2.GaussianBlur(np.pad(alpha, 4), (0, 0), 1.5)  # a soft edge reaching ~3 px outside the shape
    return np.pad(rgb, ((4, 4), (4, 4), (0, 0)), mode="edge"), alpha


def paste_object(clip: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object moving over `clip` along a curve: `(frames with it [F, H, W, 3], masks [F, H, W] where alpha > 0.5)`."""
    f, h, w = clip.shape[:3]
    oh, ow = alpha.shape
    out, masks = clip.copy(), np.zeros((f, h, w), bool)
    for t in range(f):
        s = t / max(f - 1, 1)
        x = int(round((w - ow) * (0.15 + 0.6 * s)))  # left to right, ~4 px/frame at 432 wide and 30 frames
        y = int(round((h - oh) * (0.5 + 0.3 * np.sin(2 * np.pi * s))))  # and up and down
        a = alpha[..., None]
        region = out[t, y : y + oh, x : x + ow].astype(np.float32)
        out[t, y : y + oh, x : x + ow] = np.clip(np.rint(a * rgb + (1 - a) * region), 0, 255).astype(np.uint8)
        masks[t, y : y + oh, x : x + ow] = alpha > 0.5
    return out, masks


@dataclass
class FootageCase:
    """One case: `frames` as the method receives them (with the occluder's pixels), `truth`, and the hole."""

    name: str
    frames: np.ndarray  # uint8 [F, H, W, 3]
    truth: np.ndarray  # uint8 [F, H, W, 3]: the clip without the occluder
    masks: np.ndarray  # bool [F, H, W]: the user's mask (before mask.dilate)


def footage_cases(
    root: Path, frames: int = 30, sizes: tuple[str, ...] = ("native", "240x432"), clips: tuple[str, ...] = tuple(CLIPS),
    kinds: tuple[str, ...] = KINDS,
) -> list[FootageCase]:
    """Every (clip, kind, size) case; `object` pastes the cup, so the cup clip has no `object` case."""
    cases = []
    objects: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # cut-out cup per height, cut once
    for size_name in sizes:
        size = None if size_name == "native" else tuple(int(v) for v in size_name.split("x"))
        for clip_name in clips:
            truth = read_clip(root, clip_name, frames, size)
            hw = truth.shape[1:3]
            for kind in kinds:
                if kind == "object":
                    if clip_name == "cup":
                        continue
                    if hw[0] // 3 not in objects:
                        objects[hw[0] // 3] = cup_object(root, hw[0] // 3)
                    rgb, alpha = objects[hw[0] // 3]
                    shown, masks = paste_object(truth, rgb, alpha)
                else:
                    masks = box_masks(kind, frames, hw)
                    shown = np.where(masks[..., None], 255 - truth, truth)  # the occluder: anything but the truth
                cases.append(FootageCase(f"{clip_name}-{kind}-{hw[0]}x{hw[1]}", shown, truth, masks))
    return cases
