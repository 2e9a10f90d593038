"""Label-free performance estimates from calibrated confidences (confidence-based
performance estimation, CBPE).

Why: incoming frames carry no labels, so accuracy cannot be measured, only expected. If the
probabilities are calibrated (``models/calibration.py``: ``softmax(logits / T)``), a frame
predicted ``j`` with ``p_j = 0.8`` is right 80 % of the time, so the expected number of
correct frames is the sum of the winning probabilities, and an expected confusion matrix
follows from the probabilities of every class. The estimate is only as good as the
calibration: under a shift that also breaks calibration it drifts with it, which is why
the history keeps the drift scores beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def expected_confusion(probs: np.ndarray) -> np.ndarray:
    """``[C, C]`` expected counts, rows the (unknown) true class, columns the predicted one:
    entry ``(c, j)`` is the sum of ``p_c`` over the frames predicted ``j``."""
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    onehot = np.zeros((len(probs), n_classes))
    onehot[np.arange(len(probs)), pred] = 1.0
    return probs.T @ onehot


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (sklearn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def estimate_performance(probs: np.ndarray,
                         class_names: list[str] | None = None) -> dict[str, Any]:
    """Estimated accuracy, per-class precision/recall/F1 and macro-F1 of ``probs`` ``[N, C]``
    (see ``estimate_from_confusion``)."""
    probs = np.asarray(probs, dtype=np.float64)
    return estimate_from_confusion(expected_confusion(probs), class_names)


def estimate_from_confusion(cm: np.ndarray,
                            class_names: list[str] | None = None) -> dict[str, Any]:
    """The estimates from an expected confusion matrix (sums add up across chunks, so a run
    keeps ``[C, C]`` numbers, not every frame's probabilities).

    Per class ``c``: expected TP = sum of ``p_c`` over frames predicted ``c``; FP = frames
    predicted ``c`` minus TP; FN = sum of ``p_c`` over frames predicted otherwise. Accuracy
    is the trace over the frames (the mean winning probability). Macro averages run over
    every class (no labels say which are present; with calibrated probabilities a class
    nobody shows has near-zero expected support and F1 0). ``None`` values with no frames."""
    cm = np.asarray(cm, dtype=np.float64)
    n_classes = len(cm)
    names = class_names or [str(i) for i in range(n_classes)]
    frames = cm.sum()
    if frames <= 0:
        return {"frames": 0, "accuracy": None, "macro_precision": None, "macro_recall": None,
                "macro_f1": None, "per_class": {}}
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)           # frames predicted c
    support = cm.sum(axis=1)             # expected frames truly c
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted + support)
    return {
        "frames": int(round(frames)),
        "accuracy": float(tp.sum() / frames),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {names[c]: {"precision": float(precision[c]), "recall": float(recall[c]),
                                 "f1": float(f1[c]), "support": float(support[c])}
                      for c in range(n_classes)},
    }
