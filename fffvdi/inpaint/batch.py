"""Many videos in one inference run: the video list, sharding over processes, per-video outcomes and the summary.

`scripts/inference.py --video-list LIST` (lines `VIDEO MASK [OUTPUT]`, `#` comments, relative VIDEO/MASK paths
relative to LIST, OUTPUT relative to --output) or `--video PARENT --mask MASKPARENT` (one video per subfolder of
frames or video file, its mask matched by name) gives jobs; each writes its own folder `OUT/<name>/`. Under
`accelerate launch` process r owns jobs r, r + N, ... (fffvdi.shards); the main process writes
`OUT/summary.json` from every process's outcomes.
"""
from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from tqdm import tqdm

from fffvdi.errors import FFFVDIError, InputError
from fffvdi.files import write_atomic
from fffvdi.inpaint.config import mask_options
from fffvdi.inpaint.partial import PartialOutput
from fffvdi.io import MaskSource, open_video
from fffvdi.io.output import video_name
from fffvdi.io.video import IMAGE_EXTS, VIDEO_EXTS, list_images, natural_key

logger = logging.getLogger(__name__)

MAX_EXIT = 100  # exit status = failed videos, capped (a shell status is one byte; 130 means Ctrl-C)
SHOWN = 5  # problems named in one up-front error line


@dataclass
class Job:
    """One video of a batch: its inputs and its own output folder."""

    name: str
    video: Path
    mask: Path
    output: Path


@dataclass
class Outcome:
    """What became of one job: status done | failed | skipped (a finished result exists; --overwrite redoes it)."""

    name: str
    video: str
    mask: str
    output: str
    status: str
    message: str = ""
    seconds: float = 0.0
    rank: int = 0


def _problems(what: str, problems: list[str], fix: str) -> InputError:
    """One line naming the first few problems and how many there are."""
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return InputError(f"{len(problems)} {what}: {'; '.join(problems[:SHOWN])}{more}; {fix}")


def read_video_list(path: str | Path, root: Path) -> list[Job]:
    """Jobs of a list file: one `VIDEO MASK [OUTPUT]` per line (shell quoting for spaces, `#` comments)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--video-list {path} not found; pass a text file with one 'VIDEO MASK [OUTPUT]' per line")
    jobs, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as err:  # an unclosed quote
            problems.append(f"line {number}: {err}")
            continue
        if not fields:
            continue
        if len(fields) not in (2, 3):
            problems.append(f"line {number}: {len(fields)} fields, expected VIDEO MASK [OUTPUT]")
            continue
        video, mask = (path.parent / f for f in fields[:2])  # an absolute field stays absolute
        for what, p in (("video", video), ("mask", mask)):
            if not p.exists():
                problems.append(f"line {number}: {what} {p} not found")
        name = fields[2] if len(fields) == 3 else video_name(video)
        jobs.append(Job(Path(name).name, video, mask, root / name))
    if problems:
        raise _problems(f"problems in --video-list {path}", problems, "fix those lines")
    if not jobs:
        raise InputError(f"--video-list {path} lists no video; add lines 'VIDEO MASK [OUTPUT]'")
    return _unique(jobs, f"--video-list {path}", "give them a third column OUTPUT")


def is_video_parent(path: str | Path) -> bool:
    """True for a folder holding several videos (subfolders or video files) rather than one video's frames."""
    path = Path(path)
    if not path.is_dir() or list_images(path):
        return False
    return any(_is_video_entry(p) for p in path.iterdir())


def _is_video_entry(p: Path) -> bool:
    if p.name.startswith("."):
        return False
    return p.is_dir() or (p.is_file() and p.suffix.lower() in VIDEO_EXTS)


def scan_parent(videos: str | Path, masks: str | Path, root: Path) -> list[Job]:
    """Jobs of a parent folder of videos and a parent folder of masks matched by name (`bear/` or `bear.mp4` with
    `bear/`, `bear.png` or `bear.mp4`); InputError listing every video without exactly one mask."""
    videos, masks = Path(videos), Path(masks)
    if not masks.is_dir():
        raise InputError(f"--video {videos} holds several videos, so --mask must be a folder holding one mask "
                         f"(frames folder, video or image) per video, named like the video; {masks} is not a folder")
    entries = sorted((p for p in videos.iterdir() if _is_video_entry(p)), key=lambda p: natural_key(p.name))
    candidates: dict[str, list[Path]] = {}
    for p in masks.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_dir() or p.suffix.lower() in (*VIDEO_EXTS, *IMAGE_EXTS):
            candidates.setdefault(p.name if p.is_dir() else p.stem, []).append(p)
    jobs, problems = [], []
    for entry in entries:
        name = entry.name if entry.is_dir() else entry.stem
        found = candidates.get(name, [])
        if len(found) != 1:
            problems.append(f"{entry.name}: " + (f"no {name}/ or {name}.* in {masks}" if not found else
                                                 f"several masks ({', '.join(sorted(p.name for p in found))})"))
            continue
        jobs.append(Job(name, entry, found[0], root / name))
    if problems:
        raise _problems(f"videos in {videos} lack one matching mask in {masks}", problems,
                        "add one mask (folder, video or image) per video, named like the video")
    return _unique(jobs, str(videos), "rename one of them")


def _unique(jobs: list[Job], where: str, fix: str) -> list[Job]:
    """Two jobs writing the same folder would overwrite each other: an up-front error."""
    seen: dict[Path, Job] = {}
    for job in jobs:
        key = job.output.resolve()
        if key in seen:
            raise InputError(f"{where}: {seen[key].video} and {job.video} would both write {job.output}; {fix}")
        seen[key] = job
    return jobs


def check_job(job: Job, cfg, resume: bool = False) -> Optional[str]:
    """'skip' for a finished result to keep (no --overwrite), else None once the video's frame headers, its masks and
    its output folder pass the checks a single video gets; InputError otherwise."""
    if (job.output / "config.yaml").is_file() and not cfg.output.overwrite:
        return "skip"
    with open_video(job.video, fps=cfg.fps) as video:
        masks = MaskSource.for_video(job.mask, video, **mask_options(cfg))
        try:
            masks.check()  # reads every mask: one of another aspect, or all hole, fails this video now
        finally:
            masks.close()
    PartialOutput(job.output, cfg.output.overwrite, resume).check()
    return None


def run_jobs(
    jobs: Sequence[Job], check: Callable[[Job], Optional[str]], run: Callable[[Job], None], rank: int = 0,
    progress: bool = True, report: Optional[Callable[[str], None]] = None, fatal: tuple[type, ...] = (),
) -> list[Outcome]:
    """Check every job first (no model is loaded yet), then run the ones that passed, in order.

    `check(job)` raises on a bad input or returns 'skip' for a finished result to keep; `run(job)` does the work
    (the caller builds its model once, on first use). A failure is reported in one line and the rest go on;
    Ctrl-C (KeyboardInterrupt, or one of `fatal`) stops the batch."""
    report = report or (lambda line: tqdm.write(line, file=sys.stderr))  # on its own line, above the bar
    outcomes: dict[int, Outcome] = {}  # by position: names may repeat when OUTPUT columns differ
    todo = []
    for i, job in enumerate(jobs):
        base = dict(name=job.name, video=str(job.video), mask=str(job.mask), output=str(job.output), rank=rank)
        try:
            if check(job) == "skip":
                outcomes[i] = Outcome(**base, status="skipped", message=f"{job.output} exists")
                continue
        except Exception as err:  # noqa: BLE001 - any bad input of one video fails that video only
            outcomes[i] = _failed(base, err, 0.0, report)
            continue
        todo.append((i, job, base))
    for i, job, base in tqdm(todo, desc="videos", unit="video", disable=not progress or len(todo) < 2, position=rank):
        start = time.perf_counter()
        try:
            run(job)
            outcomes[i] = Outcome(**base, status="done", seconds=round(time.perf_counter() - start, 3))
        except fatal:
            raise
        except Exception as err:  # noqa: BLE001 - a bug on one video is reported with the rest still done
            outcomes[i] = _failed(base, err, time.perf_counter() - start, report)
    return [outcomes[i] for i in range(len(jobs))]


def _failed(base: dict, err: Exception, seconds: float, report: Callable[[str], None]) -> Outcome:
    message = str(err).splitlines()[0] if str(err) else ""
    if not isinstance(err, FFFVDIError):  # not a message for a user: say what it was
        logger.debug("%s failed", base["name"], exc_info=err)
        message = f"{type(err).__name__}: {message}"
    report(f"error: {base['name']}: {message}")
    return Outcome(**base, status="failed", message=message, seconds=round(seconds, 3))


def counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Videos per status."""
    return {s: sum(o.status == s for o in outcomes) for s in ("done", "failed", "skipped")}


def write_summary(root: Path, outcomes: Sequence[Outcome], method: str, processes: int) -> Path:
    """`root/summary.json`: counts, then one record per video in the batch's order (written atomically)."""
    root.mkdir(parents=True, exist_ok=True)
    summary = {"method": method, "processes": processes, "counts": counts(outcomes),
               "videos": [asdict(o) for o in outcomes]}
    return write_atomic(root / "summary.json", json.dumps(summary, indent=1) + "\n")


def summary_line(outcomes: Sequence[Outcome]) -> str:
    """'videos: 3 done, 1 failed, 0 skipped (finished result exists)'."""
    c = counts(outcomes)
    return f"videos: {c['done']} done, {c['failed']} failed, {c['skipped']} skipped (finished result exists)"


def exit_status(outcomes: Sequence[Outcome]) -> int:
    """Failed videos, capped at MAX_EXIT; 0 when none failed."""
    return min(counts(outcomes)["failed"], MAX_EXIT)
