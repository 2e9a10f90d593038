"""Label-free estimates (CBPE) against a plain-Python recomputation, and against labels
drawn from the probabilities themselves (calibrated by construction)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.monitor.estimate import (
    estimate_from_confusion,
    estimate_performance,
    expected_confusion,
)


def _probs(n: int, k: int, seed: int, sharp: float = 0.3) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(k, sharp), size=n)


def _plain(probs: np.ndarray) -> dict:
    """Expected TP/FP/FN per class with loops, straight from the definition."""
    rows = probs.tolist()
    k = len(rows[0])
    pred = [max(range(k), key=lambda j, r=r: r[j]) for r in rows]
    out = {"accuracy": sum(max(r) for r in rows) / len(rows), "f1": [], "p": [], "r": []}
    for c in range(k):
        tp = sum(r[c] for r, j in zip(rows, pred, strict=True) if j == c)
        fp = sum(1 - r[c] for r, j in zip(rows, pred, strict=True) if j == c)
        fn = sum(r[c] for r, j in zip(rows, pred, strict=True) if j != c)
        out["p"].append(tp / (tp + fp) if tp + fp else 0.0)
        out["r"].append(tp / (tp + fn) if tp + fn else 0.0)
        out["f1"].append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return out


def test_matches_plain_python():
    probs = _probs(400, 5, seed=1)
    names = list("abcde")
    got = estimate_performance(probs, names)
    want = _plain(probs)
    assert got["frames"] == 400
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["macro_f1"] == pytest.approx(sum(want["f1"]) / 5)
    assert got["macro_precision"] == pytest.approx(sum(want["p"]) / 5)
    assert got["macro_recall"] == pytest.approx(sum(want["r"]) / 5)
    for c, name in enumerate(names):
        assert got["per_class"][name]["f1"] == pytest.approx(want["f1"][c])
        assert got["per_class"][name]["precision"] == pytest.approx(want["p"][c])
        assert got["per_class"][name]["recall"] == pytest.approx(want["r"][c])


def test_chunks_add_up_to_the_whole():
    probs = _probs(300, 4, seed=2)
    cm = expected_confusion(probs[:100]) + expected_confusion(probs[100:])
    whole = estimate_performance(probs)
    parts = estimate_from_confusion(cm)
    assert parts["accuracy"] == pytest.approx(whole["accuracy"])
    assert parts["macro_f1"] == pytest.approx(whole["macro_f1"])


def test_calibrated_probabilities_estimate_the_real_scores():
    """Labels drawn from the probabilities: the estimate must land on the measured scores."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    probs = _probs(20000, 6, seed=3, sharp=0.5)
    labels = np.array([rng.choice(6, p=p) for p in probs])
    est = estimate_performance(probs)
    pred = probs.argmax(axis=1)
    assert est["accuracy"] == pytest.approx((pred == labels).mean(), abs=0.01)
    assert est["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"), abs=0.015)


def test_overconfident_probabilities_overestimate():
    """The estimate is only as good as the calibration: sharpened probabilities (T < 1)
    claim more than the labels drawn from the true ones give."""
    rng = np.random.default_rng(4)
    probs = _probs(5000, 6, seed=4, sharp=0.8)
    labels = np.array([rng.choice(6, p=p) for p in probs])
    sharp = probs ** 4 / (probs ** 4).sum(axis=1, keepdims=True)
    true_acc = (probs.argmax(axis=1) == labels).mean()
    assert estimate_performance(sharp)["accuracy"] > true_acc + 0.1


def test_no_frames():
    got = estimate_performance(np.zeros((0, 3)))
    assert got["frames"] == 0 and got["accuracy"] is None and got["macro_f1"] is None
