"""Temperature scaling and ECE (models/calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import expected_calibration_error, fit_temperature, nll, softmax


def _sample(t_true: float, n: int = 4000, k: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, k))
    p = softmax(logits, t_true)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return logits, labels


def test_fit_recovers_the_temperature_that_generated_the_labels() -> None:
    logits, labels = _sample(2.5)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.12)
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)


def test_scaling_an_overconfident_model_lowers_ece() -> None:
    logits, labels = _sample(3.0, seed=1)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, fit_temperature(logits, labels)), labels)
    assert before > 0.1 and after < before / 2


def test_ece_extremes() -> None:
    labels = np.array([0, 1, 0, 1])
    right = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(right, labels) == pytest.approx(0.0)
    wrong = right[:, ::-1]
    assert expected_calibration_error(wrong, labels) == pytest.approx(1.0)
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, int)) == 1.0
