"""Reading single images: decoding with a clear error, and header-only size checks of many files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fffvdi.errors import InputError


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """cv2.imread that raises InputError naming the file instead of returning None."""
    try:
        img = cv2.imread(str(path), flags)
    except cv2.error:
        img = None
    if img is None:
        raise InputError(f"cannot read image {path}: file is corrupt or not an image; replace or remove it")
    return img


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image from its header alone (no decoding), as cv2.imread would return it."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            # cv2.imread applies a JPEG's EXIF rotation, so must we (other formats' getexif would decode the image)
            orientation = img.getexif().get(0x0112, 1) if img.format == "JPEG" else 1
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {path}: not an image; replace or remove it") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read image {path}: {e}; replace or remove it") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def check_image_sizes(files: list[Path], what: str) -> tuple[int, int]:
    """Read every image header up front; InputError naming the first unreadable or differently sized file."""
    first = image_size(files[0])
    for file in files[1:]:
        size = image_size(file)
        if size != first:
            raise InputError(
                f"{what} {file} is {size[0]}x{size[1]} (HxW) but {files[0].name} is {first[0]}x{first[1]}; "
                f"resize all {what}s to one size"
            )
    return first


def check_unique_stems(files: list[Path], what: str) -> None:
    """InputError if two files share a stem (`00000.jpg` and `00000.png`): each would count as its own frame."""
    seen: dict[str, Path] = {}
    dups: list[str] = []
    for file in files:
        if file.stem in seen:
            dups.append(f"{seen[file.stem].name}/{file.name}")
        seen.setdefault(file.stem, file)
    if dups:
        shown = ", ".join(dups[:3]) + (f" and {len(dups) - 3} more" if len(dups) > 3 else "")
        raise InputError(
            f"{what} folder {files[0].parent} has {len(dups)} {what}s under two extensions ({shown}), each counted "
            f"twice; keep one extension per {what} (move the other files out of the folder)"
        )
