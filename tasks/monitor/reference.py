"""The training reference a model's runs are compared with, saved in its registry metadata
(``monitor``) by the retraining flow.

Why held-out frames: the test split is the closest thing to "frames as they come" that
has labels; training frames are augmented and memorised. The reference is small and
JSON-able (a few hundred numbers): the training class mix, per joint the peak-height decile
bins with the test frames' share in each and the summary statistics of ``InputStats``, and
the calibrated confidences' binned distribution, quantiles and low-confidence share. It
also records the estimated and (with labels) measured accuracy on those frames, so a
reader can see how far the label-free estimate was off where it could be checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tasks.monitor.bins import finite_or_none
from tasks.monitor.drift import CONFIDENCE_EDGES, confidence_counts
from tasks.monitor.estimate import estimate_performance
from tasks.monitor.inputs import HEIGHT_EDGES, InputStats, height_bins, height_quantile

REFERENCE_VERSION = 1
DECILES = tuple(round(0.1 * i, 1) for i in range(1, 10))


def height_decile_edges(counts: np.ndarray) -> list[float]:
    """A joint's peak-height decile edges snapped to ``HEIGHT_EDGES`` (duplicates dropped),
    so a run's grid counts fall into the same bins exactly."""
    raw = [height_quantile(counts, q) for q in DECILES]
    snapped = {float(HEIGHT_EDGES[np.abs(HEIGHT_EDGES - v).argmin()]) for v in raw}
    return sorted(snapped)


def input_reference(stats: InputStats) -> dict[str, Any]:
    """Per joint: decile bins of the peak heights and the frames' share in each, plus
    ``InputStats.summary`` (quantiles, widths, missing rates, implausible share)."""
    if not stats.frames:  # no held-out frames: no bins, no input drift
        return {"height_edges": [[] for _ in stats.height_counts],
                "height_shares": [[1.0] for _ in stats.height_counts], **stats.summary()}
    edges = [height_decile_edges(c) for c in stats.height_counts]
    shares = []
    for c, e in zip(stats.height_counts, edges, strict=True):
        binned = height_bins(c, np.asarray(e))
        shares.append((binned / max(binned.sum(), 1)).round(6).tolist())
    return {"height_edges": edges, "height_shares": shares, **stats.summary()}


def confidence_reference(probs: np.ndarray, low_confidence: float) -> dict[str, Any]:
    """The calibrated confidences' bins (``CONFIDENCE_EDGES``), quantiles and low share."""
    conf = np.asarray(probs, np.float64).max(axis=1)
    counts = confidence_counts(conf)
    return {"edges": list(CONFIDENCE_EDGES),
            "shares": (counts / max(counts.sum(), 1)).round(6).tolist(),
            "p05": float(np.quantile(conf, 0.05)) if len(conf) else None,
            "p25": float(np.quantile(conf, 0.25)) if len(conf) else None,
            "p50": float(np.quantile(conf, 0.5)) if len(conf) else None,
            "low_confidence": low_confidence,
            "low_confidence_share": float((conf < low_confidence).mean()) if len(conf)
            else None}


def build_reference(stats: InputStats, probs: np.ndarray,
                    class_distribution: Mapping[str, int], class_names: Sequence[str],
                    labels: np.ndarray | None = None,
                    low_confidence: float = 0.5) -> dict[str, Any]:
    """The reference from held-out frames: their ``InputStats``, their calibrated
    probabilities ``[N, C]`` (model class order) and, when known, their labels; plus the
    training split's frames per class (``class_distribution``)."""
    probs = np.asarray(probs, np.float64)
    est = estimate_performance(probs, list(class_names))
    measured = None
    if labels is not None and len(labels):
        measured = float((probs.argmax(axis=1) == np.asarray(labels)).mean())
    return finite_or_none({
        "version": REFERENCE_VERSION,
        "frames": int(len(probs)),
        "class_names": list(class_names),
        "class_distribution": {str(k): int(v) for k, v in class_distribution.items()},
        "inputs": input_reference(stats),
        "confidence": confidence_reference(probs, low_confidence),
        "est_accuracy": est["accuracy"],
        "est_macro_f1": est["macro_f1"],
        "accuracy": measured,
    })
