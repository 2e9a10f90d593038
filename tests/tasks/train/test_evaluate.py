"""Evaluation (tasks/train/evaluate.py): metrics, the confusion figure, the method table.

The promotion gate's tests are in test_gate.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.train.evaluate import (
    classification_metrics,
    comparison_table,
    confusion_png,
    remap_probabilities,
)

NAMES = ["a", "b", "c"]


def _onehot(pred: list[int], n: int = 3) -> np.ndarray:
    return np.eye(n)[pred] * 0.9 + 0.1 / n


def test_metrics_of_a_known_confusion() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = [0, 0, 0, 1, 1, 1, 2, 0]
    m = classification_metrics(y, _onehot(pred), NAMES)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["confusion"] == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    pa = m["per_class"]["a"]
    assert pa["precision"] == pytest.approx(3 / 4) and pa["recall"] == pytest.approx(3 / 4)
    f_b = 2 * (2 / 3) * 1 / (2 / 3 + 1)
    f_c = 2 * 1 * 0.5 / 1.5
    assert m["macro_f1"] == pytest.approx((0.75 + f_b + f_c) / 3)
    assert m["per_class"]["c"]["support"] == 2
    assert 0 <= m["ece"] <= 1


def test_macro_average_skips_classes_absent_from_the_test_side() -> None:
    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, _onehot([0, 0, 1, 1]), NAMES)
    assert m["macro_f1"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["support"] == 0
    empty = classification_metrics(np.zeros(0, int), np.zeros((0, 3)), NAMES)
    assert empty["macro_f1"] is None and empty["n"] == 0


def test_confusion_png_is_written(tmp_path: Path) -> None:
    path = confusion_png([[3, 1], [0, 2]], ["a", "b"], tmp_path / "v" / "confusion.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_comparison_table_lists_every_method() -> None:
    table = comparison_table({"cnn": {"accuracy": 0.9, "macro_f1": 0.88, "ece": 0.02,
                                      "seconds": 12.0},
                              "majority": {"accuracy": 0.06, "macro_f1": 0.01}})
    lines = table.splitlines()
    assert len(lines) == 4 and "| cnn | 0.900 | 0.880 |" in lines[2]
    assert lines[3].startswith("| majority | 0.060 | 0.010 |")


def test_remap_probabilities_by_name() -> None:
    probs = np.array([[0.2, 0.8]])
    out = remap_probabilities(probs, ["b", "z"], NAMES)
    np.testing.assert_allclose(out, [[0.0, 0.2, 0.0]])
