"""The promotion gate (tasks/train/gate.py): the policies, the champion/challenger rule with
its shift floor, and which test files make the comparison fair."""

from __future__ import annotations

import pytest

from tasks.train.gate import (
    decide_promotion,
    f1_of,
    fair_test_files,
    fairness_note,
    gate_verdict,
)


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


def test_fair_test_files_leave_out_groups_production_trained_on() -> None:
    groups = ["a", "b", "c", "d"]
    meta = {"split": {"groups": {"train": ["a"], "val": ["b"], "test": ["c", "d"]}}}
    assert fair_test_files([0, 2, 3], groups, meta) == ([2, 3], 1, "")
    fair, left_out, note = fair_test_files([0, 1], groups, meta)
    assert fair == [0, 1] and left_out == 2 and "flatters production" in note
    assert fair_test_files([0, 1], groups, {}) == ([0, 1], 0, "")  # imported: no split


def test_fairness_note_and_f1_of() -> None:
    assert fairness_note({"note": "flatters"}, 10) == "; flatters"
    assert fairness_note({"excluded_files": 0}, 10) == ""
    assert "on the 7 test file(s)" in fairness_note({"excluded_files": 3}, 10)
    assert f1_of({"shift_metrics": {"macro_f1": 0.5}}, "shift_metrics") == 0.5
    assert f1_of(None, "shift_metrics") is None and f1_of({}, "shift_metrics") is None


def test_a_production_model_trained_on_a_file_split_is_never_called_fairly_compared() -> None:
    """Its split names no groups, so leaving out groups by name proves nothing: every test
    file is kept, and the reason says the comparison may flatter production."""
    groups = ["a", "b", "c"]
    meta = {"split": {"method": "file", "groups": {"train": [], "val": [], "test": []}}}
    fair, left_out, note = fair_test_files([0, 1, 2], groups, meta)
    assert fair == [0, 1, 2] and left_out == 0
    assert "file split" in note and "may flatter production" in note
    assert fairness_note({"note": note, "excluded_files": 0}, 3) == f"; {note}"


def _scores(cnn: float, prod: float) -> tuple[dict, dict]:
    evaluation = {"metrics": {"macro_f1": cnn}}
    champion = {"version": "v0001", "metrics": {"macro_f1": prod}, "excluded_files": 0}
    return evaluation, champion


def test_gate_refuses_an_adapted_model_worse_on_the_target_labels() -> None:
    """Better on the labeled folder's test split, worse on the held-out feedback frames (the
    heatmaps users actually have): refused, with both numbers; within the margin: promoted
    and the reason shows them."""
    evaluation, champion = _scores(0.95, 0.90)
    worse = {"frames": 40, "challenger": {"macro_f1": 0.70},
             "production": {"macro_f1": 0.80, "label": "v0001"}}
    ok, why = gate_verdict("if-better", 0.02, evaluation, champion, 10, target=worse)
    assert not ok and why.startswith("not promoted: worse on the 40 held-out feedback")
    assert "0.7000" in why and "0.7800" in why
    close = {**worse, "challenger": {"macro_f1": 0.79}}
    ok, why = gate_verdict("if-better", 0.02, evaluation, champion, 10, target=close)
    assert ok and "held-out feedback frame(s) 0.7900 vs production 0.8000" in why
    assert gate_verdict("always", 0.02, evaluation, champion, 10, target=worse)[0]
    broken = {"frames": 40, "challenger": {"macro_f1": 0.9}, "production": {"error": "boom"}}
    ok, why = gate_verdict("if-better", 0.02, evaluation, champion, 10, target=broken)
    assert not ok and "could not be scored" in why


def test_gate_promotes_an_unjudged_adapted_model_only_when_told() -> None:
    evaluation, champion = _scores(0.99, 0.50)
    ok, why = gate_verdict("if-better", 0.0, evaluation, champion, 10, adapted_unjudged=True)
    assert not ok and "no target-domain labels" in why and "--promote always" in why
    ok, _ = gate_verdict("if-better", 0.0, evaluation, None, 10, adapted_unjudged=True)
    assert not ok  # even as the first model
    assert gate_verdict("always", 0.0, evaluation, champion, 10, adapted_unjudged=True)[0]
