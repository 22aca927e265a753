"""Atomic, resumable output folders: a run writes into `OUT.partial/` and only a finished run becomes `OUT`.

So a folder named OUT is always complete. `OUT.partial/` holds config.yaml and run.json (what
was asked for, checked on `--resume`), frames/ (PNGs written so far) and progress.npz: how far
the run got (frames finished and, for windowed methods, the `WindowState` to go on from),
replaced atomically after every window. On completion the bookkeeping files are removed and the
folder is renamed to OUT (an older OUT, replaced with --overwrite, is removed only then).
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from fffvdi.errors import InputError
from fffvdi.files import first_difference, write_atomic
from fffvdi.inpaint.windows import WindowState
from fffvdi.io.output import png_name

logger = logging.getLogger(__name__)

# masks/: masks tracked from one annotation (--box / --mask-frame), with their overlay masks_preview.mp4
RESULT_ENTRIES = {"config.yaml", "frames", "inpainted.mp4", "masked_input.mp4", "comparison.mp4", "masks"}
BOOKKEEPING = ("progress.npz", "run.json")


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


class PartialOutput:
    """The output folder `final` of one run and its unfinished twin `final.partial`."""

    def __init__(self, final: str | Path, overwrite: bool = False, resume: bool = False) -> None:
        self.final = Path(final)
        self.partial = self.final.with_name(self.final.name + ".partial")
        self.overwrite, self.resume = overwrite, resume
        self.resumed = False  # this run continues an earlier one's partial folder
        self._created = False  # this run created the partial folder

    @property
    def frames_dir(self) -> Path:
        return self.partial / "frames"

    def check(self) -> None:
        """Refuse, before any work, what would lose output or fail at the end; InputError naming the fix."""
        final, partial = self.final, self.partial
        if final.exists() and not final.is_dir():
            raise InputError(f"output {final} exists and is a file; choose a folder path for --output")
        if final.is_dir() and any(final.iterdir()):
            if not self.overwrite:
                hint = " (it is complete; nothing to resume)" if self.resume else ""
                raise InputError(f"output folder {final} exists{hint}; pass --overwrite to replace it or choose another --output")
            foreign = sorted(p.name for p in final.iterdir() if p.name not in RESULT_ENTRIES)
            if foreign:
                raise InputError(
                    f"output folder {final} holds files that are not an inpainting result (e.g. {foreign[0]}); "
                    "--overwrite only replaces a previous result, so choose another --output"
                )
            if not os.access(final, os.W_OK | os.X_OK):
                raise InputError(f"output folder {final} is read-only; make it writable or choose another --output")
        if partial.exists() and not partial.is_dir():
            raise InputError(f"{partial} exists and is a file; remove it or choose another --output")
        if partial.is_dir() and not self.resume and not self.overwrite:
            raise InputError(
                f"unfinished output {partial} is left from an interrupted run; pass --resume to continue it "
                "or --overwrite to start over"
            )
        parent = next((p for p in (final.parent, *final.parent.parents) if p.exists()), Path("."))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"cannot write output {final}: {parent} is read-only; choose another --output")

    def begin(self, config_text: str, run_info: dict) -> None:
        """Create (or, resuming, re-open) the partial folder and record config.yaml and run.json first."""
        if self.partial.is_dir() and self.resume:
            self._check_same_run(config_text, run_info)
            self.resumed = True
            return
        if self.resume:
            logger.info("--resume: no unfinished %s; starting from the beginning", self.partial)
        try:
            if self.partial.is_dir():  # --overwrite: an older unfinished run is replaced
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True)
            self._created = True
            write_atomic(self.partial / "config.yaml", config_text.encode("utf-8"))
            write_atomic(self.partial / "run.json", json.dumps(run_info, sort_keys=True).encode("utf-8"))
        except OSError as e:
            if self._created:
                shutil.rmtree(self.partial, ignore_errors=True)
            raise InputError(
                f"cannot write output folder {self.partial} ({_reason(e)}); choose another --output or free space"
            ) from None

    def _check_same_run(self, config_text: str, run_info: dict) -> None:
        """A resumed run must ask for what the interrupted one asked for."""
        try:
            old_cfg = yaml.safe_load((self.partial / "config.yaml").read_text(encoding="utf-8"))
            old_run = json.loads((self.partial / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            raise InputError(
                f"{self.partial} has no readable config.yaml/run.json, so it cannot be resumed; pass --overwrite to start over"
            ) from None
        new_cfg = yaml.safe_load(config_text)
        for d in (old_cfg, new_cfg):
            for key in ("overwrite", "dir"):  # where and how to write, not what to compute
                d.get("output", {}).pop(key, None)
        for old, new in ((old_run, run_info), (old_cfg, new_cfg)):
            diff = first_difference(old, new)
            if diff is not None:
                diff, was, now = diff
                raise InputError(
                    f"{self.partial} was started with {diff}={was!r}, now {now!r}; rerun with the same inputs and "
                    "settings to resume, or pass --overwrite to start over"
                )

    def progress(self) -> dict:
        """What the partial folder says is finished: {'done': frames, 'complete': bool, 'state': WindowState|None}."""
        path = self.partial / "progress.npz"
        if not (self.resumed and path.is_file()):
            return {"done": 0, "complete": False, "state": None}
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                state = None
                if meta.get("next_window") is not None:
                    state = WindowState(
                        meta["next_window"], meta["done"], z["pending"], torch.from_numpy(z["generator"].copy())
                    )
        except (OSError, ValueError, KeyError):
            raise InputError(f"{path} is damaged; pass --overwrite to start over") from None
        return {"done": int(meta["done"]), "complete": bool(meta["complete"]), "state": state}

    def check_frames(self, names: list[str], done: int) -> None:
        """Every PNG the interrupted run finished must still be there."""
        missing = next((n for n in names[:done] if not (self.frames_dir / png_name(n)).is_file()), None)
        if missing is not None:
            raise InputError(
                f"{self.frames_dir} lacks {png_name(missing)}, finished before the interruption; "
                "pass --overwrite to start over"
            )

    def save_progress(self, done: int, complete: bool = False, state: Optional[WindowState] = None) -> None:
        """Record (atomically) that frames [0, done) are final, and the window state to go on from."""
        meta = {"done": int(done), "complete": bool(complete), "next_window": None if state is None else state.next_window}
        pending = np.zeros((0,), np.uint8) if state is None else state.pending
        generator = np.zeros((0,), np.uint8) if state is None else state.generator.numpy()
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)), pending=pending, generator=generator)
        write_atomic(self.partial / "progress.npz", buf.getvalue())

    def has_work(self) -> bool:
        """True if the partial folder holds anything a resume could use (progress or frames)."""
        return (self.partial / "progress.npz").exists() or (self.frames_dir.is_dir() and any(self.frames_dir.iterdir()))

    def discard_if_unused(self) -> bool:
        """Remove a partial folder this run created and wrote no frame into (a failed start); True if removed."""
        if self._created and not self.has_work():
            shutil.rmtree(self.partial, ignore_errors=True)
            return True
        return False

    def finish(self, keep_frames: bool = True) -> Path:
        """Drop the bookkeeping and rename the partial folder to the final one (replacing an older result)."""
        try:
            for name in BOOKKEEPING:
                (self.partial / name).unlink(missing_ok=True)
            if not keep_frames and self.frames_dir.is_dir():
                shutil.rmtree(self.frames_dir)
            old = None
            if self.final.is_dir() and any(self.final.iterdir()):
                old = self.final.with_name(self.final.name + ".replaced")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(self.final, old)  # the old result survives until the new one is in place
            os.replace(self.partial, self.final)
            if old is not None:
                shutil.rmtree(old)
        except OSError as e:
            raise InputError(
                f"cannot move the finished result {self.partial} to {self.final} ({_reason(e)}); "
                "the result is complete in the .partial folder"
            ) from None
        return self.final
