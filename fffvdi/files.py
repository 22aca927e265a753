"""Helpers shared by every run folder (inference outputs, evaluation runs, configs): atomic writes and the first
setting that differs between two runs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` so that `path` holds either its old content or all of the new one, even after a crash or kill.

    An OSError names `path`; the temporary file is removed (a full disk must not stay fuller).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    return path


def first_difference(old: Any, new: Any, prefix: str = "") -> Optional[tuple[str, Any, Any]]:
    """`(dotted key, old value, new value)` of the first value that differs between two nested dicts, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            diff = first_difference(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
            if diff is not None:
                return diff
        return None
    return None if old == new else (prefix, old, new)
