"""Writing results: the output folder and its default name, PNG frames with the input's names, H.264 mp4s."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import imageio_ffmpeg
import numpy as np

from fffvdi.errors import InputError
from fffvdi.io.video import read_image

DEFAULT_CRF = 17  # libx264 constant rate factor: visually lossless, files still small
# Frames-folder names that say nothing about the video: the default output takes the parent's name instead.
GENERIC_FOLDERS = {"frames", "images", "imgs", "img", "jpegimages", "rgb", "color", "input", "inputs", "video"}
OVERLAY = np.array([255, 64, 64], np.float32)  # mask colour in masked_input.mp4
logger = logging.getLogger(__name__)


def video_name(video: str | Path) -> str:
    """A video's name: a video file's stem, or a frames folder's name (its parent's when the folder's is generic,
    e.g. frames or JPEGImages)."""
    path = Path(video).resolve()
    name = path.stem if path.is_file() else path.name
    if not path.is_file() and name.lower() in GENERIC_FOLDERS and path.parent.name:
        name = path.parent.name
    return name


def default_output_dir(video: str | Path, method: str, root: str | Path = "results") -> Path:
    """`results/<name>-<method>` (<name>: `video_name`), so inputs and methods never collide."""
    return Path(root) / f"{video_name(video)}-{method}"


def prepare_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create the output folder; refuse a non-empty existing one unless `overwrite` (nothing is deleted)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is a file; choose a folder path for --output")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} exists; pass --overwrite or choose another --output")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {out} ({e.strerror}); choose another --output") from None
    return out


def png_name(name: str) -> str:
    """Output file name for an input frame name: same stem, `.png` (`00012.jpg` -> `00012.png`)."""
    return Path(name).stem + ".png"


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [n, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")


class _Mp4Encoder:
    """H.264/yuv420p encoder fed one RGB frame at a time; odd sizes are padded to even (edge copy)."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float, crf: int = DEFAULT_CRF):
        h, w = size
        self.size = size
        self.pad = (h % 2, w % 2)  # yuv420p subsamples chroma 2x2, so libx264 needs even sides
        self._gen = imageio_ffmpeg.write_frames(
            str(path),
            (w + self.pad[1], h + self.pad[0]),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=1,  # no rescaling by imageio: padding above keeps pixels unresampled
            output_params=["-crf", str(crf)],
        )
        self._gen.send(None)  # start ffmpeg

    @property
    def padded(self) -> tuple[int, int] | None:
        """The (W, H) the mp4 stores when it differs from the frames' (an odd side), else None."""
        return (self.size[1] + self.pad[1], self.size[0] + self.pad[0]) if any(self.pad) else None

    def send(self, frame: np.ndarray) -> None:
        """Encode one uint8 [H, W, 3] RGB frame."""
        if any(self.pad):
            frame = np.pad(frame, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(frame).tobytes())

    def close(self) -> None:
        """Flush and finish the file."""
        if self._gen is not None:
            self._gen.close()
            self._gen = None


def note_padding(encoders: dict[str, _Mp4Encoder], exact: str = "") -> None:
    """Say in one line which mp4s got an odd side padded to even, so a size differing from the input's is no surprise
    (`exact`: what keeps the exact size, e.g. the PNG frames)."""
    padded = {name: enc.padded for name, enc in encoders.items() if enc.padded}
    if not padded:
        return
    h, w = next(enc.size for enc in encoders.values() if enc.padded)
    sizes = ", ".join(f"{name} {pw}x{ph}" for name, (pw, ph) in padded.items())
    # yuv444p would keep odd sides, but Safari, QuickTime, Firefox and hardware decoders refuse H.264 in 4:4:4
    logger.info(
        "note: frames of %dx%d (WxH) have an odd side, which H.264 in yuv420p (what all common players play) cannot "
        "store, so the mp4 repeats edge pixels: %s%s", w, h, sizes, f"; {exact}" if exact else ""
    )


class VideoWriter:
    """Writes frames in order, chunk by chunk: PNGs named after the input frames and/or one mp4.

    Layout: `<out_dir>/<frames_dirname>/<stem>.png` and `<out_dir>/<mp4_name>`. The frame size is
    taken from the first chunk. PNGs keep the exact size; the mp4 pads odd sides by one pixel (logged once).
    """

    def __init__(
        self,
        out_dir: str | Path,
        fps: float,
        write_png: bool = True,
        write_mp4: bool = True,
        mp4_name: str = "output.mp4",
        frames_dirname: str = "frames",
        crf: int = DEFAULT_CRF,
        written: Sequence[str] = (),
    ):
        """`written`: PNG names an earlier, interrupted part of this run already wrote (resuming)."""
        if fps <= 0:
            raise InputError(f"invalid fps {fps} for output {out_dir}; pass a positive --fps")
        self.out_dir = Path(out_dir)
        self.fps, self.crf = float(fps), crf
        self.frames_dir: Path | None = self.out_dir / frames_dirname if write_png else None
        self.mp4_path: Path | None = self.out_dir / mp4_name if write_mp4 else None
        self.size: tuple[int, int] | None = None
        self.count = 0
        self._written: set[str] = set(written)
        self._mp4: _Mp4Encoder | None = None
        self._closed = False
        if self.frames_dir is not None:
            self.frames_dir.mkdir(parents=True, exist_ok=True)
        elif self.mp4_path is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def write(self, frames: np.ndarray, names: Sequence[str]) -> None:
        """Append frames uint8 [n, H, W, 3] RGB named after the input frames `names` (length n)."""
        if self._closed:
            raise RuntimeError(f"VideoWriter for {self.out_dir} is closed")
        _check_frames(frames)
        if len(names) != len(frames):
            raise ValueError(f"got {len(frames)} frames but {len(names)} names")
        size = (frames.shape[1], frames.shape[2])
        if self.size is None:
            self.size = size
            if self.mp4_path is not None:
                self._mp4 = _Mp4Encoder(self.mp4_path, size, self.fps, self.crf)
                note_padding({self.mp4_path.name: self._mp4}, "the PNGs keep the exact size" if self.frames_dir else "")
        elif size != self.size:
            raise ValueError(f"frame size {size} differs from the first chunk's {self.size}")
        for frame, name in zip(frames, names):
            if self.frames_dir is not None:
                self._write_png(frame, png_name(name))
            if self._mp4 is not None:
                self._mp4.send(frame)
            self.count += 1

    def _write_png(self, frame: np.ndarray, name: str) -> None:
        if name in self._written:
            raise InputError(
                f"two input frames map to output {self.frames_dir / name}; rename input frames so their stems differ"
            )
        file = self.frames_dir / name
        if not cv2.imwrite(str(file), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise InputError(f"cannot write {file}; check that the output folder is writable and has space")
        self._written.add(name)

    def close(self) -> None:
        """Finish the mp4; warn if `frames/` holds PNGs this writer did not write (an earlier run's)."""
        if self._closed:
            return
        self._closed = True
        if self._mp4 is not None:
            self._mp4.close()
        if self.frames_dir is not None:
            stale = sorted(p.name for p in self.frames_dir.glob("*.png") if p.name not in self._written)
            if stale:
                warnings.warn(
                    f"{self.frames_dir} holds {len(stale)} PNGs not written by this run (e.g. {stale[0]}); "
                    "delete them or use an empty --output",
                    UserWarning,
                    stacklevel=2,
                )

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | Path, frames: np.ndarray | Iterable[np.ndarray], fps: float, crf: int = DEFAULT_CRF) -> Path:
    """Write frames (uint8 [F, H, W, 3] RGB, or an iterable of [H, W, 3]) to an H.264 mp4 at `fps`."""
    out = Path(path)
    if fps <= 0:
        raise InputError(f"invalid fps {fps} for {out}; pass a positive fps")
    out.parent.mkdir(parents=True, exist_ok=True)
    enc: _Mp4Encoder | None = None
    try:
        for frame in frames:
            _check_frames(frame[None])
            if enc is None:
                enc = _Mp4Encoder(out, frame.shape[:2], fps, crf)
                note_padding({out.name: enc})
            elif frame.shape[:2] != enc.size:
                raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame's {enc.size}")
            enc.send(frame)
    finally:
        if enc is not None:
            enc.close()
    if enc is None:
        raise ValueError(f"no frames to write to {out}")
    return out


def tint(frames: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Frames uint8 [n, H, W, 3] with the holes [n, H, W] shown as a half-transparent coloured overlay."""
    hole = holes[..., None].astype(np.float32)
    return np.clip(frames * (1 - 0.5 * hole) + OVERLAY * 0.5 * hole, 0, 255).astype(np.uint8)


def encode_outputs(
    out_dir: Path,
    names: Sequence[str],
    fps: float,
    read_frames,
    read_masks,
    inpainted: bool = True,
    masked_input: bool = True,
    comparison: bool = True,
    chunk: int = 16,
) -> None:
    """Write inpainted.mp4 / masked_input.mp4 / comparison.mp4 from `out_dir/frames` PNGs and the input
    (`read_frames(start, stop)`, `read_masks(start, stop)`), `chunk` frames at a time (bounded memory); odd sides
    are padded to even, said in one log line (`note_padding`)."""
    targets = {"inpainted.mp4": inpainted, "masked_input.mp4": masked_input, "comparison.mp4": comparison}
    encoders: dict[str, _Mp4Encoder] = {}
    need_input = masked_input or comparison
    try:
        for start in range(0, len(names), chunk):
            stop = min(start + chunk, len(names))
            result = np.stack([
                cv2.cvtColor(read_image(out_dir / "frames" / png_name(n)), cv2.COLOR_BGR2RGB) for n in names[start:stop]
            ])
            src = read_frames(start, stop) if need_input else None
            videos = {
                "inpainted.mp4": lambda: result,
                "masked_input.mp4": lambda: tint(src, read_masks(start, stop)),
                "comparison.mp4": lambda: np.concatenate([src, result], axis=2),
            }
            for name, make in videos.items():
                if not targets[name]:
                    continue
                frames = make()
                if name not in encoders:
                    encoders[name] = _Mp4Encoder(out_dir / name, frames.shape[1:3], fps)
                for frame in frames:
                    encoders[name].send(frame)
            if start == 0:
                note_padding(encoders, "the PNGs in frames/ keep the exact size")  # one line for all, once every one is open
    finally:
        for enc in encoders.values():
            enc.close()
