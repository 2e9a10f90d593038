"""Distances between a run and the model's training reference, and the alert rule.

Why these: the population stability index (PSI) is one scale for every distribution we
watch (predicted class mix, each joint's peak heights, confidences): < 0.1 stable,
0.1-0.25 moderate, > 0.25 major shift (``tasks.read.summary.PSI_BANDS``). Chi-square comes
with the class mix because the report already shows it, but with thousands of frames it
flags differences nobody would act on; the thresholds use PSI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tasks.monitor.inputs import InputStats, height_bins
from tasks.read.summary import SHARE_FLOOR, class_mix_drift

# Confidence bins for the reference and the run: calibrated confidences crowd near 1.
CONFIDENCE_EDGES = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
MIN_FRAMES_FOR_PSI = 200  # below this, a run's PSI is mostly sampling noise


def psi(expected: np.ndarray, observed: np.ndarray, floor: float = SHARE_FLOOR) -> float:
    """Population stability index of two histograms on the same bins (counts or shares),
    each share floored at ``floor`` so a bin empty on one side stays finite. NaN when either
    side is empty."""
    a = np.asarray(expected, np.float64)
    b = np.asarray(observed, np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return float("nan")
    a = np.maximum(a / a.sum(), floor)
    b = np.maximum(b / b.sum(), floor)
    return float(((b - a) * np.log(b / a)).sum())


def class_mix_scores(labels: Mapping[str, int], reference: Mapping[str, Any]
                     ) -> dict[str, float]:
    """PSI, chi-square and its p-value of the predicted class mix against the reference's
    training mix (``tasks.read.summary.class_mix_drift``: the report's own figures)."""
    if not sum(labels.values()) or not reference.get("class_distribution"):
        return {"psi": float("nan"), "chi2": float("nan"), "p_value": float("nan")}
    d = class_mix_drift(labels, reference["class_distribution"])
    return {"psi": d["psi"], "chi2": d["chi2"], "p_value": d["p_value"]}


def joint_height_psi(stats: InputStats, reference: Mapping[str, Any]) -> np.ndarray:
    """``[17]`` PSI of each joint's peak heights against the reference, on the reference's
    own per-joint bins (deciles of its frames, so every bin matters equally)."""
    ref = reference["inputs"]
    out = np.full(len(stats.height_counts), np.nan)
    for j, (edges, shares) in enumerate(zip(ref["height_edges"], ref["height_shares"],
                                            strict=True)):
        out[j] = psi(np.asarray(shares), height_bins(stats.height_counts[j], np.asarray(edges)))
    return out


def confidence_counts(confidence: np.ndarray) -> np.ndarray:
    """Counts of confidences in the bins of ``CONFIDENCE_EDGES`` (open at both ends)."""
    bins = np.searchsorted(CONFIDENCE_EDGES, np.asarray(confidence, np.float64), side="right")
    return np.bincount(bins, minlength=len(CONFIDENCE_EDGES) + 1)


def alert_items(row: Mapping[str, Any], psi_threshold: float, min_est_accuracy: float,
                min_frames: int = MIN_FRAMES_FOR_PSI) -> list[dict[str, Any]]:
    """Each threshold a run's monitoring row crosses, as ``{metric, value, threshold,
    reason}`` (empty: no alert): the payload of a ``posebatch.monitor.alert`` event. Scores
    that are NaN or missing (no reference, no frames) never alert: missing data is not drift.
    PSI is not judged on a run of fewer than ``min_frames`` frames: on decile bins sampling
    noise alone gives a PSI of about ``9 / frames``, near the threshold for a small run."""
    items = []
    frames = row.get("frames")
    judge_psi = frames is None or frames >= min_frames
    for key in ("class_mix_psi", "input_psi", "confidence_psi") if judge_psi else ():
        v = row.get(key)
        if v is not None and np.isfinite(v) and v > psi_threshold:
            items.append({"metric": key, "value": float(v), "threshold": psi_threshold,
                          "reason": f"{key} {v:.3f} > {psi_threshold:g}"})
    acc = row.get("est_accuracy")
    if acc is not None and np.isfinite(acc) and acc < min_est_accuracy:
        items.append({"metric": "est_accuracy", "value": float(acc),
                      "threshold": min_est_accuracy,
                      "reason": f"est_accuracy {acc:.3f} < {min_est_accuracy:g}"})
    return items


def alert_reasons(row: Mapping[str, Any], psi_threshold: float, min_est_accuracy: float,
                  min_frames: int = MIN_FRAMES_FOR_PSI) -> list[str]:
    """Why a run's monitoring row should alert (empty: no alert), as one line per crossed
    threshold (``alert_items`` has the same as data)."""
    return [i["reason"] for i in alert_items(row, psi_threshold, min_est_accuracy,
                                             min_frames)]
