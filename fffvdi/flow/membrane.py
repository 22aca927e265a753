"""One exact sparse solve inside a hole, shared by edge-aware flow completion and Poisson blending.

Over the hole pixels p it solves `sum_s w_s(p) (x(p) - x(p + s) - g_s(p)) = 0` for the four steps s
(`STEPS`): links of weight `w` pull neighbours together (membrane), `g` asks for a given difference
(Poisson guidance). Pixels outside the hole are fixed boundary values; there is no link past the
image edge (zero normal derivative). scipy's sparse LU solves it exactly, all channels at once.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import splu

STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (dy, dx) of the 4-neighbours: the first axis of weights/guide


def solve_in_hole(
    values: np.ndarray, hole: np.ndarray, weights: Optional[np.ndarray] = None, guide: Optional[np.ndarray] = None
) -> np.ndarray:
    """`values [h, w, C]` with `hole [h, w]` re-solved; `weights [4, h, w]` (default 1), `guide [4, h, w, C]` (default 0)."""
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    n = len(ys)
    out = values.astype(np.float64).copy()
    if n == 0:
        return out
    index = np.full((h, w), -1, np.int64)
    index[ys, xs] = np.arange(n)
    rows, cols, links = [np.arange(n)], [np.arange(n)], []
    diag, rhs = np.zeros(n), np.zeros((n, values.shape[-1]))
    for s, (dy, dx) in enumerate(STEPS):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        i, ny, nx = np.flatnonzero(inside), ny[inside], nx[inside]
        wt = np.ones(len(i)) if weights is None else weights[s, ys[i], xs[i]].astype(np.float64)
        diag[i] += wt
        if guide is not None:
            rhs[i] += wt[:, None] * guide[s, ys[i], xs[i]]
        j = index[ny, nx]
        free = j >= 0
        rows.append(i[free])
        cols.append(j[free])
        links.append(-wt[free])
        rhs[i[~free]] += wt[~free, None] * values[ny[~free], nx[~free]]  # boundary values
    a = coo_matrix((np.concatenate([diag, *links]), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    out[ys, xs] = splu(a.tocsc()).solve(rhs)
    return out
