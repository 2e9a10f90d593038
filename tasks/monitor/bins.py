"""Counts on fixed grids: quantiles and coarser bins read back from them.

Why: monitoring statistics must add up across chunks and workers, so values are counted on
a fixed fine grid; quantiles and the coarse bins of a distance (PSI) are then read from the
counts, without keeping the values.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def grid_quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """The ``q`` quantile of values counted between consecutive ``edges`` (``len(edges) - 1``
    bins), linear within a bin. NaN with no values."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    cum = np.cumsum(counts)
    i = min(int(np.searchsorted(cum, q * total, side="left")), len(counts) - 1)
    before = cum[i - 1] if i else 0.0
    frac = (q * total - before) / counts[i] if counts[i] else 0.0
    return float(edges[i] + frac * (edges[i + 1] - edges[i]))


def regroup(counts: np.ndarray, lower: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fine-bin ``counts`` (``[..., B]``, bin ``i`` starting at ``lower[i]``) summed into the
    ``len(edges) + 1`` bins of coarser ``edges`` (open at both ends). Exact when every coarse
    edge is a fine bin's lower edge."""
    which = np.searchsorted(np.asarray(edges, np.float64), np.asarray(lower, np.float64),
                            side="right")
    counts = np.asarray(counts, np.float64)
    out = np.zeros((*counts.shape[:-1], len(edges) + 1))
    for b in range(len(edges) + 1):
        out[..., b] = counts[..., which == b].sum(axis=-1)
    return out


def finite_or_none(v: Any) -> Any:
    """``v`` with NaN and infinities (nested in lists and dicts) as None: Parquet nulls and
    strict JSON."""
    if isinstance(v, dict):
        return {k: finite_or_none(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [finite_or_none(x) for x in v]
    if isinstance(v, float | np.floating):
        return float(v) if np.isfinite(v) else None
    return v
