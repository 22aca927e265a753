"""Error types raised on bad user input; each message is one line naming the path and the fix."""


class FFFVDIError(Exception):
    """Base class of every error fffvdi raises on purpose."""


class InputError(FFFVDIError, ValueError):
    """Bad user input: missing or unreadable file, count or size mismatch, empty input."""


class ConfigError(FFFVDIError, ValueError):
    """Bad configuration: unknown key, wrong type, invalid value."""


class ModelLoadError(FFFVDIError, OSError):
    """Model components could not be loaded (offline hub, missing folder, wrong layout)."""
