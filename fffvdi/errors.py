from __future__ import annotations

"""Error types raised on bad user input; each message is one line naming the path and the fix."""


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
