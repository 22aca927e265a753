"""Atomic training checkpoints and the run folder: a kill at any moment leaves each `checkpoint-N/` complete or absent.

A save goes to `checkpoint-N.tmp/`; once every file is written and fsynced, a `COMPLETE` marker is
written and the folder is renamed to `checkpoint-N/` (a rename is atomic). Older checkpoints are
pruned only after that, each first renamed to `checkpoint-K.deleting/`. So `latest` (the newest
complete checkpoint) always exists once one save has finished; half-written folders are reported
and skipped, never preferred, and never deleted except when the same step is saved again.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

from fffvdi.errors import InputError

logger = logging.getLogger("fffvdi.train")

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
PARTIAL_RE = re.compile(r"^checkpoint-(\d+)(\.tmp|\.deleting)?$")
MARKER = "COMPLETE"  # written last; a checkpoint folder without it is not trusted
STAGING, DELETING = ".tmp", ".deleting"
CRASH_ENV = "FFFVDI_CRASH_AT"  # test hook: "STAGE:STEP" SIGKILLs this process at that point of that step's save


def crash_point(stage: str, step: int) -> None:
    """Kill this process (SIGKILL, as a power cut would) when FFFVDI_CRASH_AT names this stage of this save.

    Stages, in save order: saving (inside accelerate's save_state), staged (state written, not yet
    marked), marked (marker written, not yet renamed), renamed (complete, older ones not yet pruned),
    pruning (an older checkpoint renamed to .deleting, not yet removed).
    """
    if os.environ.get(CRASH_ENV) == f"{stage}:{step}":
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_step(path: str | Path) -> int:
    """Optimizer step N of a checkpoint-N folder."""
    match = CHECKPOINT_RE.match(Path(path).name)
    if match is None:
        raise InputError(f"{path} is not a checkpoint folder; resume from OUTPUT_DIR/checkpoint-N or 'latest'")
    return int(match.group(1))


def is_complete(path: str | Path) -> bool:
    """True for a `checkpoint-N/` folder whose save finished (it holds the marker)."""
    path = Path(path)
    return CHECKPOINT_RE.match(path.name) is not None and (path / MARKER).is_file()


def _candidates(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    return [p for p in output_dir.iterdir() if p.is_dir() and PARTIAL_RE.match(p.name)]


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint-N folders of a run, oldest (smallest N) first."""
    return sorted((p for p in _candidates(Path(output_dir)) if is_complete(p)), key=checkpoint_step)


def incomplete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Folders left by an interrupted save or prune (`.tmp`, `.deleting`, or no marker), by name."""
    return sorted(p for p in _candidates(Path(output_dir)) if not is_complete(p))


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """The folder to resume from: None, the newest complete checkpoint for 'latest' (None if none), or a path."""
    if resume is None:
        return None
    partial = incomplete_checkpoints(output_dir)
    if partial:
        logger.warning("ignoring %d incomplete checkpoint folder(s) left by an interrupted save: %s",
                       len(partial), ", ".join(p.name for p in partial))
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume).expanduser()
    checkpoint_step(path)
    if not path.is_dir():
        raise InputError(f"checkpoint.resume_from_checkpoint={resume} does not exist; pass an existing checkpoint-N "
                         "or latest")
    if not is_complete(path):
        raise InputError(f"checkpoint {path} is incomplete (no {MARKER} marker: its save was interrupted); resume "
                         "from checkpoint.resume_from_checkpoint=latest or another checkpoint-N")
    newer = [p.name for p in list_checkpoints(path.parent) if checkpoint_step(p) > checkpoint_step(path)]
    if newer:
        logger.warning("resuming from %s although newer checkpoints exist (%s); they are replaced when this run "
                       "reaches their step", path.name, ", ".join(newer))
    return path


def staging_dir(output_dir: str | Path, step: int, clear: bool = True) -> Path:
    """`checkpoint-N.tmp/` to save into; with `clear` (the main process) a stale one from an interrupted save of the
    same step is removed first."""
    staging = Path(output_dir) / f"checkpoint-{step}{STAGING}"
    if clear and staging.exists():
        logger.warning("removing %s left by an interrupted save of the same step", staging)
        shutil.rmtree(staging)
    return staging


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` to disk, so the marker never lands before the data."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(path: Path, step: int | None = None) -> None:
    """Rename to `.deleting` (atomic: it stops counting at once), then remove."""
    doomed = path.with_name(path.name + DELETING)
    if doomed.exists():
        shutil.rmtree(doomed)
    path.rename(doomed)
    if step is not None:
        crash_point("pruning", step)
    shutil.rmtree(doomed)


def commit_checkpoint(staging: Path, step: int) -> Path:
    """Mark a fully written `checkpoint-N.tmp/` complete and rename it to `checkpoint-N/`; returns that path."""
    _fsync_tree(staging)
    crash_point("staged", step)
    marker = staging / MARKER
    marker.write_text(json.dumps({"step": step, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    _fsync_tree(staging)
    crash_point("marked", step)
    final = replace_folder(staging, staging.with_name(f"checkpoint-{step}"), fsynced=True)
    crash_point("renamed", step)
    return final


def replace_folder(src: Path, dst: Path, fsynced: bool = False) -> Path:
    """Move a fully written folder `src` to `dst` (an existing `dst` is discarded first); returns `dst`."""
    if not fsynced:
        _fsync_tree(src)
    if dst.exists():  # e.g. the same step saved before by a resumed older run, or an incomplete leftover
        _discard(dst)
    src.rename(dst)
    _fsync_dir(dst.parent)
    return dst


def write_folder(dst: Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` into `dst.tmp/` (a stale one from a killed write is removed first), then `replace_folder` it to
    `dst`: a kill leaves the old `dst` or the new one, never a mix."""
    staging = dst.with_name(dst.name + STAGING)
    if staging.exists():
        shutil.rmtree(staging)
    write(staging)
    return replace_folder(staging, dst)


def prune_checkpoints(output_dir: str | Path, total_limit: int | None, keep: Path | None = None) -> list[Path]:
    """Remove the oldest complete checkpoints beyond `total_limit`; `keep` (the one just saved) always stays.

    Incomplete folders are not counted and not touched; `.deleting` leftovers of a killed prune are removed.
    """
    out = Path(output_dir)
    for leftover in (p for p in _candidates(out) if p.name.endswith(DELETING)):
        shutil.rmtree(leftover)
    if not total_limit or total_limit < 1:
        return []
    others = [p for p in list_checkpoints(out) if keep is None or p.name != Path(keep).name]
    room = total_limit - (1 if keep is not None else 0)
    doomed = others[: max(len(others) - room, 0)]
    for path in doomed:
        _discard(path, checkpoint_step(keep) if keep is not None else None)
        logger.info("removed %s (checkpoint.total_limit=%s)", path, total_limit)
    return doomed


def clear_run(output_dir: str | Path) -> list[Path]:
    """Every checkpoint folder, complete or not, plus `unet/` and `lora/` (what checkpoint.overwrite=true deletes)."""
    out = Path(output_dir)
    return sorted(_candidates(out)) + [p for p in (out / "unet", out / "lora") if p.is_dir()]


def prepare_run_dir(output_dir: str | Path, resuming: bool, overwrite: bool, main: bool = True) -> Path:
    """Refuse a run folder holding checkpoints unless resuming, or clear them with overwrite (only `main` writes)."""
    out = Path(output_dir)
    old = clear_run(out)
    if old and not resuming:
        if not overwrite:
            raise InputError(f"checkpoint.output_dir={out} already holds a run ({old[0].name}); pass "
                             "checkpoint.resume_from_checkpoint=latest, checkpoint.overwrite=true or a new output_dir")
        for path in old if main else ():
            shutil.rmtree(path)
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create checkpoint.output_dir={out} ({err.strerror}); choose a writable "
                             "folder") from None
    return out
