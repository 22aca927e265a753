"""Per-session temporary folders and safe handling of uploaded files (browser names never become paths)."""
from __future__ import annotations

import atexit
import itertools
import shutil
import stat
import tempfile
import threading
import zipfile
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from fffvdi.errors import InputError
from fffvdi.io.video import IMAGE_EXTS, natural_key, open_video

UPLOAD_EXTS = (".mp4", ".mov", ".avi", ".zip")  # what the upload accepts (mkv is read too but not offered)
MAX_ZIP_BYTES = 4 << 30  # uncompressed size a frames zip may unpack to (a zip bomb stops here)
MAX_ZIP_MEMBERS = 20000  # frames a zip may hold


def upload_suffix(client_name: str) -> str:
    """The lower-case extension of a browser-given file name if it is one the app accepts; InputError otherwise.

    Only the suffix is read from the name, and only to pick the decoder: the stored file gets a generated name."""
    suffix = PurePosixPath(str(client_name).replace("\\", "/")).suffix.lower()
    if suffix not in UPLOAD_EXTS:
        raise InputError(
            f"unsupported upload {PurePosixPath(str(client_name)).name!r}: expected "
            f"{'/'.join(e[1:] for e in UPLOAD_EXTS)} (a video file or a zip of jpg/png frames)"
        )
    return suffix


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member must not be extracted (absolute path, '..', drive letter, link), or None if it is fine."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in parts:
        return "a '..' component"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return None


def extract_frames_zip(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract the jpg/png frames of a zip into `dest` as 00000.<ext>, 00001.<ext>, ... in natural order of
    their member names; a member with an absolute path, '..' or a link (zip-slip) rejects the whole zip."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"upload is not a readable zip ({err}); zip the frame images again") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            why = _unsafe_member(info)
            if why:
                raise InputError(f"zip member {info.filename!r} has {why}; zip the frames without folders outside it")
        frames = [i for i in infos if not i.is_dir() and PurePosixPath(i.filename).suffix.lower() in IMAGE_EXTS
                  and not PurePosixPath(i.filename).name.startswith(".")]  # skips __MACOSX/._x.jpg resource forks
        if not frames:
            raise InputError(f"the zip holds no {'/'.join(e[1:] for e in IMAGE_EXTS)} frames; zip the frame images")
        if len(frames) > MAX_ZIP_MEMBERS or sum(i.file_size for i in frames) > MAX_ZIP_BYTES:
            raise InputError(f"the zip is too large (over {MAX_ZIP_MEMBERS} frames or {MAX_ZIP_BYTES >> 30} GiB); "
                             "upload a shorter clip")
        frames.sort(key=lambda i: natural_key(i.filename))
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for k, info in enumerate(frames):
            target = dest / f"{k:05d}{PurePosixPath(info.filename).suffix.lower()}"  # generated, never the member name
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            written.append(target)
    return written


class Session:
    """One browser session's folder: the uploaded clip as PNG frames, annotations, tracked masks and results."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._counter = itertools.count()
        self.frames_dir: Path | None = None  # current clip, PNG frames 00000.png ...
        self.fps = 24.0
        self.num_frames = 0
        self.size = (0, 0)  # (H, W)
        self.click: tuple[int, int] | None = None  # first corner of a box being drawn
        self.masks_dir: Path | None = None  # masks tracked for the annotation `masks_key`
        self.masks_key: tuple | None = None
        self.pending_masks: tuple | None = None  # (masks_dir, key) of the job in flight
        self.job_id: int | None = None  # this page's latest job

    def new_dir(self, kind: str) -> Path:
        """A fresh sub-folder `<kind>-<n>` (kind is one of ours, never a browser string)."""
        path = self.folder / f"{kind}-{next(self._counter)}"
        path.mkdir(parents=True)
        return path

    def new_path(self, kind: str, suffix: str = "") -> Path:
        """A fresh, not yet existing path `<kind>-<n><suffix>` inside the session folder."""
        return self.folder / f"{kind}-{next(self._counter)}{suffix}"

    def import_video(self, uploaded: str | Path, client_name: str | None = None) -> Path:
        """Copy an upload in under a generated name and turn it into a PNG frames folder; returns that folder.

        `uploaded` is where the web server stored the upload; `client_name` (default: its name) is the name the
        browser gave, used for its extension only."""
        uploaded = Path(uploaded)
        suffix = upload_suffix(client_name if client_name is not None else uploaded.name)
        if not uploaded.is_file():
            raise InputError("the upload did not arrive; upload the file again")
        stored = self.new_path("upload", suffix)
        shutil.copyfile(uploaded, stored)
        source = stored
        if suffix == ".zip":
            source = self.new_dir("zip")
            extract_frames_zip(stored, source)
        try:
            video = open_video(source)  # checks every frame's header (a zip) or the container (a video file)
        except InputError as err:
            raise InputError(f"the uploaded {suffix[1:]} cannot be read: {err}") from None
        frames_dir = self.new_dir("frames")
        try:
            for start, block in video.chunks(16):  # bounded memory for long clips
                for i, frame in enumerate(block, start):
                    cv2.imwrite(str(frames_dir / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        except InputError:
            raise
        except Exception as err:  # ffmpeg's own messages are long; keep one line
            raise InputError(f"cannot decode the uploaded {suffix[1:]} ({type(err).__name__}); "
                             "convert it to an H.264 mp4 and upload again") from None
        finally:
            video.close()
        if source != stored:
            shutil.rmtree(source, ignore_errors=True)
        stored.unlink()  # the PNGs are what every later step reads
        self.frames_dir, self.fps = frames_dir, video.fps  # a zip of frames plays at 24 fps
        self.num_frames, self.size = len(video), tuple(video.size)
        return frames_dir

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` of the current clip, uint8 [H, W, 3] RGB (clamped to the clip)."""
        if self.frames_dir is None:
            raise InputError("no video yet; upload a video or a zip of frames first")
        index = int(min(max(index, 0), self.num_frames - 1))
        return cv2.cvtColor(cv2.imread(str(self.frames_dir / f"{index:05d}.png")), cv2.COLOR_BGR2RGB)


class SessionStore:
    """Session folders under one temporary root, created on first use, removed on `close` and at exit."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        # always a fresh folder of our own (inside `root` if given): close_all deletes it whole
        self.root = Path(tempfile.mkdtemp(prefix="fffvdi-app-", dir=root))
        self._sessions: dict[str, Session] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        atexit.register(self.close_all)

    def get(self, key: str) -> Session:
        """The session of `key` (a server-side session id), created with a generated folder name on first use."""
        with self._lock:
            if key not in self._sessions:
                folder = self.root / f"session-{next(self._ids)}"
                folder.mkdir()
                self._sessions[key] = Session(folder)
            return self._sessions[key]

    def close(self, key: str) -> None:
        """Forget a session and delete its folder."""
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            shutil.rmtree(session.folder, ignore_errors=True)

    def close_all(self) -> None:
        """Delete every session folder and the root (at exit)."""
        with self._lock:
            self._sessions.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __contains__(self, key: str) -> bool:
        return key in self._sessions
