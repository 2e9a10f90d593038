"""Pseudo-labels (tasks/adapt/selftrain.py): the threshold and the class balance hold."""

from __future__ import annotations

import numpy as np

from tasks.adapt.selftrain import marginal_entropy, pseudo_labels


def _probs(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 3
    logits[: n // 2, 0] += 6  # class 0 dominates the stream
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_pseudo_labels_respect_the_threshold_and_the_class_balance() -> None:
    probs = _probs(600, 5, 0)
    idx, labels = pseudo_labels(probs, threshold=0.9)
    assert len(idx) and np.all(np.diff(idx) > 0)
    assert np.all(probs[idx].max(1) >= 0.9)
    np.testing.assert_array_equal(labels, probs[idx].argmax(1))
    counts = np.bincount(labels, minlength=5)
    assert counts.max() <= int(np.ceil(600 / 5))  # the dominant class is capped
    above = np.bincount(probs.argmax(1)[probs.max(1) >= 0.9], minlength=5)
    assert above[0] > counts[0]  # ... and it had more to give
    # the capped class keeps its most confident frames
    dropped = np.setdiff1d(np.flatnonzero((probs.argmax(1) == 0) & (probs.max(1) >= 0.9)), idx)
    assert probs[idx[labels == 0]].max(1).min() >= probs[dropped].max(1).max()


def test_pseudo_labels_explicit_cap_and_nothing_confident() -> None:
    probs = _probs(300, 3, 1)
    _, labels = pseudo_labels(probs, threshold=0.5, per_class=7)
    assert np.bincount(labels, minlength=3).max() <= 7
    idx, labels = pseudo_labels(np.full((10, 4), 0.25), threshold=0.9)
    assert len(idx) == 0 and len(labels) == 0


def test_marginal_entropy_sees_a_collapse() -> None:
    k = 6
    spread = np.eye(k)[np.arange(60) % k]
    collapsed = np.eye(k)[np.zeros(60, int)]
    assert abs(marginal_entropy(spread) - np.log(k)) < 1e-9
    assert marginal_entropy(collapsed) == 0.0
