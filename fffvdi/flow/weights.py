"""The weight files a `flow` config section needs (RAFT, ProPainter's flow completion) and what is wrong with them,
so config checks report every missing file of a run in one line before anything is loaded or written."""
from __future__ import annotations

import os
from typing import Any

from fffvdi.flow.propainter import weights_problem
from fffvdi.flow.raft_weights import SETTING as RAFT_KEY

RANDOM = ("random", "none")  # weight values that mean random initialisation (tests and speed measurements only)


def raft_weights_problem(method: str, weights: str | None) -> str | None:
    """Why `flow.raft_weights` cannot serve `flow.method` (one line with the fix), None when it can or is unused.
    Unset means torchvision's download, checked when RAFT is built."""
    if not method.startswith("raft") or weights is None or str(weights).lower() in RANDOM:
        return None
    if not os.path.isfile(os.path.expanduser(str(weights))):
        return (f"{RAFT_KEY}={weights!r} does not exist; pass raft-things.pth (princeton-vl/RAFT's models.zip) or "
                f"torchvision's raft_large .pth")
    return None


def flow_weight_problems(flow: Any) -> dict[str, str]:
    """{config key: problem} for every weight file the `flow` section names but cannot be used."""
    found = {RAFT_KEY: raft_weights_problem(flow.method, flow.raft_weights)}
    if flow.completion == "propainter":
        found["flow.completion_weights"] = weights_problem(flow.completion_weights)
    return {key: problem for key, problem in found.items() if problem is not None}
