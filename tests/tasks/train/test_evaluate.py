"""Evaluation (tasks/train/evaluate.py): metrics, the confusion figure, and the promotion gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.train.evaluate import (
    classification_metrics,
    comparison_table,
    confusion_png,
    decide_promotion,
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


def test_gate_promotes_a_better_challenger_and_refuses_a_worse_one() -> None:
    ok, why = decide_promotion("if-better", 0.95, 0.90, 0.02, has_production=True)
    assert ok and why.startswith("promoted") and "0.9500" in why
    ok, why = decide_promotion("if-better", 0.91, 0.90, 0.02, has_production=True)
    assert not ok and why.startswith("not promoted") and "0.9200" in why
    ok, _ = decide_promotion("if-better", 0.90, 0.90, 0.0, has_production=True)
    assert ok  # "at least": ties go to the challenger when the margin is zero


def test_gate_refuses_a_challenger_worse_on_shift() -> None:
    # Better in distribution, worse on the shifted test split by more than the margin.
    ok, why = decide_promotion("if-better", 0.99, 0.95, 0.01, True,
                               challenger_shift_f1=0.80, champion_shift_f1=0.90)
    assert not ok and why.startswith("not promoted: worse on shift")
    assert "0.8000" in why and "0.8900" in why  # the floor: production's 0.90 - margin
    # Worse on shift, but within the margin: promoted, and the reason gives both numbers.
    ok, why = decide_promotion("if-better", 0.99, 0.95, 0.01, True,
                               challenger_shift_f1=0.895, champion_shift_f1=0.90)
    assert ok and "shifted test split 0.8950" in why
    # Better on shift but not in distribution: the in-distribution rule still holds.
    assert not decide_promotion("if-better", 0.90, 0.95, 0.0, True,
                                challenger_shift_f1=0.99, champion_shift_f1=0.5)[0]
    # "always" does not look at shift; no shifted scores: the old rule alone.
    assert decide_promotion("always", 0.5, 0.9, 0.0, True, challenger_shift_f1=0.1,
                            champion_shift_f1=0.9)[0]
    assert decide_promotion("if-better", 0.96, 0.95, 0.0, True)[0]


def test_gate_policies_and_edge_cases() -> None:
    assert decide_promotion("if-better", 0.1, None, 0.5, has_production=False)[0]
    assert "first model" in decide_promotion("if-better", 0.1, None, 0.5, False)[1]
    assert decide_promotion("always", 0.1, 0.99, 0.5, has_production=True)[0]
    assert not decide_promotion("never", 0.99, 0.1, 0.0, has_production=False)[0]
    ok, why = decide_promotion("if-better", 0.99, None, 0.0, True, champion_error="boom")
    assert not ok and "boom" in why
    assert not decide_promotion("if-better", None, 0.5, 0.0, True)[0]
    with pytest.raises(ValueError):
        decide_promotion("sometimes", 0.9, 0.9, 0.0, True)


def test_remap_probabilities_by_name() -> None:
    probs = np.array([[0.2, 0.8]])
    out = remap_probabilities(probs, ["b", "z"], NAMES)
    np.testing.assert_allclose(out, [[0.0, 0.2, 0.0]])
