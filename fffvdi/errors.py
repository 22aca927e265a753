"""Error types raised on bad user input; each message is one line naming the path and the fix."""
from __future__ import annotations

from typing import Iterable


class FFFVDIError(Exception):
    """Base class of every error fffvdi raises on purpose."""


class InputError(FFFVDIError, ValueError):
    """Bad user input: missing or unreadable file, count or size mismatch, empty input."""


class ConfigError(FFFVDIError, ValueError):
    """Bad configuration: unknown key, wrong type, invalid value; `key` (e.g. 'window.overlap') names the culprit so
    the message can say where it was set (command line, YAML file or default)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ModelLoadError(FFFVDIError, OSError):
    """Model components could not be loaded (offline hub, missing folder, wrong layout)."""


def one_of(names: Iterable[str]) -> str:
    """"'a', 'b' or 'c'": the allowed values of a closed choice, for an error message."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
