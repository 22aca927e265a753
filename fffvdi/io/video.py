"""Reading videos: a frames folder (natural order) or a video file, lazily, chunk by chunk."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import imageio_ffmpeg
import numpy as np

from fffvdi.errors import InputError
from fffvdi.io.images import check_image_sizes, check_unique_stems, read_image

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")
DEFAULT_FPS = 24.0

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value, so `2.png` comes before `10.png`."""
    parts = _DIGITS.split(name)
    # Even indices are text, odd are digit runs; tag each so int and str never get compared.
    return tuple((0, int(p), p) if i % 2 else (1, p.lower(), p) for i, p in enumerate(parts))


def read_id_list(path: str | Path) -> list[str]:
    """Video ids from a text file, one per line; blank lines and '#' comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video list not found: {path}; pass a text file with one video id per line")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def list_images(folder: Path) -> list[Path]:
    """Image files (jpg/jpeg/png, any case) directly inside `folder`, naturally sorted."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda p: natural_key(p.name))


def check_exists(path: Path, what: str) -> None:
    """Raise InputError if `path` does not exist."""
    if not path.exists():
        raise InputError(f"{what} not found: {path}; pass an existing path")


def _video_meta(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(decodable frame count, fps, (H, W)) of a video file; InputError if ffmpeg cannot parse it.

    Warns (naming the file) when the header's duration promises more frames than decode: a truncated file.
    """
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        gen.close()
        count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (OSError, RuntimeError, StopIteration) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot read video {path} ({reason}); check the file is a valid video") from None
    w, h = meta["size"]
    fps, duration = float(meta["fps"]), meta.get("duration")
    if duration and fps > 0:
        promised = round(float(duration) * fps)
        if abs(promised - count) > 1:  # the header's duration is rounded to 10 ms: allow a frame
            warnings.warn(
                f"video {path}: its header says {promised} frames ({float(duration):g} s at {fps:g} fps) but only "
                f"{count} decode; the file is probably truncated, so only those {count} are used "
                "(re-encode or re-download it to get all frames)",
                UserWarning,
                stacklevel=2,
            )
    return int(count), fps, (int(h), int(w))


class _SequentialDecoder:
    """Decodes a video file front to back; restarts from frame 0 when asked to go backwards."""

    def __init__(self, path: Path, size: tuple[int, int]):
        self.path, self.size = path, size
        self._gen: Iterator | None = None
        self.pos = 0  # index of the next frame the generator yields

    def _restart(self) -> None:
        self.close()
        self._gen = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")
        next(self._gen)  # meta dict
        self.pos = 0

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as uint8 [H, W, 3] RGB."""
        if self._gen is None or index < self.pos:
            self._restart()
        h, w = self.size
        while True:
            try:
                buf = next(self._gen)
            except (StopIteration, RuntimeError, OSError):
                self.close()
                raise InputError(
                    f"video {self.path} ended or failed at frame {self.pos} (wanted {index}); "
                    "the file may be truncated, re-encode it or extract its frames to a folder"
                ) from None
            self.pos += 1
            if self.pos - 1 == index:
                return np.frombuffer(buf, np.uint8).reshape(h, w, 3)

    def close(self) -> None:
        """Stop the ffmpeg subprocess."""
        if self._gen is not None:
            self._gen.close()
            self._gen = None


class VideoSource:
    """Lazy video: frames are read on demand by `read(start, stop)`; memory does not grow with length.

    A frames folder reads only the requested files. A video file is decoded sequentially by a cached
    ffmpeg reader: forward reads are cheap, the last block read is kept so overlapping windows reuse
    it, and a read behind the reader goes to a second, trailing reader (e.g. a crop pasted back into
    frames the propagation read `radius` frames ago), which restarts from frame 0 only if it is ahead too.
    """

    def __init__(self, path: str | Path, fps: float | None = None):
        """Open `path`; `fps` is the frame rate of a frames folder (None: 24); a video file keeps its own."""
        self.path = Path(path)
        check_exists(self.path, "video")
        self._files: list[Path] | None = None
        self._decoder: _SequentialDecoder | None = None
        self._trailing: _SequentialDecoder | None = None  # reads behind `_decoder`, opened on the first one
        self._cache_start, self._cache = 0, np.zeros((0, 0, 0, 3), np.uint8)
        if self.path.is_dir():
            self._files = list_images(self.path)
            if not self._files:
                raise InputError(
                    f"no frames in folder {self.path}; it needs {'/'.join(e[1:] for e in IMAGE_EXTS)} images"
                )
            check_unique_stems(self._files, "frame")  # `0.jpg` and `0.png` would be two frames: one input, twice
            self.names = [p.name for p in self._files]
            self.fps = float(fps) if fps is not None else DEFAULT_FPS
            check_image_sizes(self._files, "frame")  # every frame, before any work: a bad one fails now
            first = read_image(self._files[0])
            self.size: tuple[int, int] = (first.shape[0], first.shape[1])
        elif self.path.suffix.lower() in VIDEO_EXTS:
            count, self.fps, self.size = _video_meta(self.path)
            if count == 0:
                raise InputError(f"video {self.path} has no frames; check the file")
            self.names = [f"{i:05d}.png" for i in range(count)]
            self._decoder = _SequentialDecoder(self.path, self.size)
        else:
            raise InputError(
                f"unsupported video {self.path}: expected a frames folder or a "
                f"{'/'.join(VIDEO_EXTS)} file; extract frames to a folder or convert it"
            )
        if self.fps <= 0:
            raise InputError(f"invalid fps {self.fps} for {self.path}; pass a positive --fps")

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"VideoSource({str(self.path)!r}, frames={len(self)}, size={self.size}, fps={self.fps:g})"

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"frame range [{start}, {stop}) outside [0, {len(self)}) of {self.path}")

    def _read_file(self, index: int) -> np.ndarray:
        file = self._files[index]
        img = cv2.cvtColor(read_image(file), cv2.COLOR_BGR2RGB)
        if img.shape[:2] != self.size:
            raise InputError(
                f"frame {file} is {img.shape[0]}x{img.shape[1]} (HxW) but the first frame is "
                f"{self.size[0]}x{self.size[1]}; resize all frames to one size"
            )
        return img

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as uint8 [n, H, W, 3] RGB."""
        self._check_range(start, stop)
        h, w = self.size
        out = np.empty((stop - start, h, w, 3), np.uint8)
        cache_stop = self._cache_start + len(self._cache)
        for i in range(start, stop):
            if self._files is not None:
                out[i - start] = self._read_file(i)
            elif self._cache_start <= i < cache_stop:
                out[i - start] = self._cache[i - self._cache_start]
            else:
                out[i - start] = self._decode(i)
        if self._decoder is not None:
            self._cache_start, self._cache = start, out.copy()  # bounded by the request size
        return out

    def _decode(self, index: int) -> np.ndarray:
        """Frame `index` from the reader it lies ahead of: two interleaved forward passes never restart each other."""
        if index >= self._decoder.pos:
            return self._decoder.frame(index)
        if self._trailing is None:
            self._trailing = _SequentialDecoder(self.path, self.size)
        return self._trailing.frame(index)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start, frames) over the whole video in consecutive chunks of at most `size` frames."""
        for start in range(0, len(self), size):
            yield start, self.read(start, min(start + size, len(self)))

    def close(self) -> None:
        """Release the decoder (a frames folder holds nothing open)."""
        for decoder in (self._decoder, self._trailing):
            if decoder is not None:
                decoder.close()
        self._cache = np.zeros((0, 0, 0, 3), np.uint8)

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing useful to do
            pass


@dataclass
class Video:
    """A whole video in memory, for small inputs."""

    frames: np.ndarray  # uint8 [F, H, W, 3] RGB
    names: list[str]
    fps: float

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return (self.frames.shape[1], self.frames.shape[2])


class RecentFrames:
    """Remembers the last `keep` frames a `read(start, stop)` function returned, so that a consumer a
    little behind the producer (an output writer behind a streaming method) does not read them again:
    for a video file that would restart decoding from frame 0. Cached frames are shared, not copied."""

    def __init__(self, read: Callable[[int, int], np.ndarray], keep: int) -> None:
        self._read, self.keep = read, max(int(keep), 1)
        self._frames: dict[int, np.ndarray] = {}

    def __call__(self, start: int, stop: int) -> np.ndarray:
        if stop > start and all(i in self._frames for i in range(start, stop)):
            if stop - start == 1:
                return self._frames[start][None]
            return np.stack([self._frames[i] for i in range(start, stop)])
        block = self._read(start, stop)
        for i, frame in zip(range(start, stop), block):
            self._frames[i] = frame
        newest = max(self._frames, default=0)
        for i in [i for i in self._frames if i <= newest - self.keep]:
            del self._frames[i]
        return block


def open_video(path: str | Path, fps: float | None = None) -> VideoSource:
    """Open a frames folder or video file lazily (`fps`: a folder's frame rate, default 24)."""
    return VideoSource(path, fps)


def load_video(path: str | Path, fps: float | None = None) -> Video:
    """Read a whole frames folder or video file into memory."""
    with VideoSource(path, fps) as src:
        return Video(frames=src.read(0, len(src)), names=list(src.names), fps=src.fps)
