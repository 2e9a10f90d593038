"""Drift scores: PSI against its formula, per-joint input drift on generated data, alerts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.monitor.drift import (
    CONFIDENCE_EDGES,
    alert_reasons,
    class_mix_scores,
    confidence_counts,
    joint_height_psi,
    psi,
)
from tasks.monitor.inputs import InputStats
from tasks.monitor.reference import input_reference
from tasks.synth.generate import synth_dataset
from tasks.synth.nuisance import shifted


def test_psi_matches_its_formula():
    a, b = [10, 30, 60], [20, 20, 60]
    want = sum((q / 100 - p / 100) * math.log((q / 100) / (p / 100))
               for p, q in zip(a, b, strict=True))
    assert psi(np.array(a), np.array(b)) == pytest.approx(want)
    assert psi(np.array(a), np.array(a)) == 0.0
    assert psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])) > 5  # floored, finite
    assert math.isnan(psi(np.array([0, 0]), np.array([1, 2])))


def test_class_mix_scores_use_the_reference_mix():
    ref = {"class_distribution": {"a": 50, "b": 50}}
    same = class_mix_scores({"a": 100, "b": 100}, ref)
    skewed = class_mix_scores({"a": 180, "b": 20}, ref)
    assert same["psi"] == pytest.approx(0.0, abs=1e-6) and same["p_value"] > 0.9
    assert skewed["psi"] > 0.25 and skewed["chi2"] > 50
    assert math.isnan(class_mix_scores({"a": 3}, {})["psi"])


@pytest.fixture(scope="module")
def reference() -> dict:
    return {"inputs": input_reference(InputStats().add(synth_dataset(6, seed=31).frames))}


def test_input_drift_small_on_new_people_large_on_shifted_peaks(reference):
    fresh = InputStats().add(synth_dataset(6, seed=32).frames)
    lower = InputStats().add(synth_dataset(6, seed=32,
                                           nuisance=shifted(2.0, ["peak_height"])).frames)
    same = joint_height_psi(fresh, reference)
    moved = joint_height_psi(lower, reference)
    assert same.shape == (17,) and np.nanmean(same) < 0.25
    assert np.nanmean(moved) > 2 * np.nanmean(same)
    assert np.nanmean(moved) > 0.25


def test_confidence_counts_bins():
    got = confidence_counts(np.array([0.1, 0.3, 0.95, 0.999, 1.0]))
    assert len(got) == len(CONFIDENCE_EDGES) + 1 and got.sum() == 5
    assert got[0] == 1 and got[1] == 1 and got[-1] == 2  # 0.3 opens bin 1; >= 0.99 the last


def test_alert_reasons():
    calm = {"class_mix_psi": 0.05, "input_psi": 0.1, "confidence_psi": None,
            "est_accuracy": 0.97}
    assert alert_reasons(calm, 0.25, 0.85) == []
    assert alert_reasons({**calm, "input_psi": float("nan")}, 0.25, 0.85) == []
    bad = alert_reasons({**calm, "input_psi": 0.4, "est_accuracy": 0.8}, 0.25, 0.85)
    assert len(bad) == 2 and bad[0].startswith("input_psi") and "est_accuracy" in bad[1]
    small = alert_reasons({**calm, "input_psi": 0.4, "frames": 50}, 0.25, 0.85)
    assert small == []  # too few frames to judge a PSI
    assert alert_reasons({**calm, "input_psi": 0.4, "frames": 500}, 0.25, 0.85)
