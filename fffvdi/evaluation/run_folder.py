"""An evaluation run folder: `run.json` (the settings that determine the numbers) and `videos/<video>.json` records,
written atomically, read back by a resume and by the merge of several processes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from fffvdi.errors import InputError
from fffvdi.evaluation.scoring import Scorer
from fffvdi.files import first_difference, write_atomic


def check_output(out: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Accept `out` (absent, empty, or a run with the same settings) for resuming; refuse a different run's folder
    unless `overwrite`. Reads only: every process runs it before the main process writes (`init_output`)."""
    run_file = out / "run.json"
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file; choose a folder")
    work = [p for sub in ("videos", "results") if (out / sub).is_dir() for p in (out / sub).iterdir()]
    if out.is_dir() and any(out.iterdir()) and not overwrite and not (run_file.is_file() and not work):
        # (a run that finished no video, e.g. failed at model loading, may be restarted with other settings)
        if not run_file.is_file():
            raise InputError(f"--output {out} is not empty and holds no evaluation run (run.json); pass --overwrite or choose another folder")
        diff = first_difference(json.loads(run_file.read_text(encoding="utf-8")), fingerprint)
        if diff is not None:
            key, was, now = diff
            raise InputError(
                f"--output {out} holds a run with different {key} ({was!r}, now {now!r}); "
                "pass --overwrite to replace it or choose another folder"
            )


def init_output(out: Path, fingerprint: dict[str, Any]) -> None:
    """Create `out/videos/` and write `run.json` (the main process only, after every process checked `out`)."""
    (out / "videos").mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", fingerprint)


def write_json(path: Path, obj: Any) -> None:
    """Atomic write (a crash never leaves a half record that a resume would trust)."""
    write_atomic(path, json.dumps(obj))


def usable_record(rec_path: Path, scorer: Scorer) -> Optional[dict[str, Any]]:
    """A finished video's record if it has every metric this run computes, else None."""
    if not rec_path.is_file():
        return None
    rec = json.loads(rec_path.read_text(encoding="utf-8"))
    if scorer.lpips is not None and "lpips" not in rec["per_frame"]:
        return None
    if scorer.i3d is not None and "i3d_real" not in rec:
        return None
    return rec


def read_records(out: Path, videos: list[str]) -> list[dict[str, Any]]:
    """Every video's record from `out/videos/<video>.json`, in listing order (the merge reads what the processes
    wrote, exactly as a resumed run reads its finished videos)."""
    records = []
    for name in videos:
        path = out / "videos" / f"{name}.json"
        if not path.is_file():
            raise InputError(
                f"record {path} is missing after every process finished; with several machines --output must be a "
                "folder all of them share"
            )
        records.append(json.loads(path.read_text(encoding="utf-8")))
    return records
