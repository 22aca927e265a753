"""The Hugging Face hub as model sources see it: local path or hub id, offline mode, a fast reachability probe.

Shared by the SVD loader (`fffvdi.models.loading`) and the SAM 2 tracker (`fffvdi.tracking.sam2`), so that both
refuse an unreachable, uncached model in about a second instead of letting `from_pretrained` retry for ~30 s.
"""
from __future__ import annotations

import os

from huggingface_hub import constants
from huggingface_hub.utils import get_session

_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's spelling of a true environment flag
PROBE_TIMEOUT_S = 3.0  # connectivity probe before a hub download; a reachable hub answers far sooner


def is_local(source: str) -> bool:
    """Hub ids look like 'org/name'; anything else (or an existing folder) is a local path."""
    return os.path.isdir(source) or source.startswith(("/", ".", "~")) or source.count("/") != 1


def env_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (at its import, or now: a test or caller may set it later)."""
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One HEAD request to the hub endpoint (HF_ENDPOINT, proxies honoured) answered below 500 within `timeout`."""
    try:
        return get_session().head(constants.ENDPOINT, timeout=timeout).status_code < 500
    except Exception:  # noqa: BLE001 - DNS, refused, timeout, proxy: the transport's own types vary by version
        return False
