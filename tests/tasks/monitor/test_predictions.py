"""The predictions accumulator against plain Python over a generated predictions table."""

from __future__ import annotations

from collections import Counter
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from models.spec import class_names
from tasks.monitor.estimate import estimate_performance
from tasks.monitor.predictions import PredictionStats, probabilities
from tasks.synth.sample_outputs import synth_predictions


@pytest.fixture(scope="module")
def table() -> pa.Table:
    t = synth_predictions(1500, date(2024, 6, 1), 2, seed=9)
    warnings = [["ood_skeleton"] if i % 10 == 0 else (["no_peak"] if i % 7 == 0 else [])
                for i in range(t.num_rows)]
    return t.set_column(t.column_names.index("warnings"), "warnings",
                        pa.array(warnings, pa.list_(pa.string())))


def test_counts_match_plain_python(table):
    stats = PredictionStats(class_names(), low_confidence=0.6).add(table)
    rows = table.to_pylist()
    assert stats.frames == len(rows)
    assert stats.labels == Counter(r["label"] for r in rows)
    assert stats.summary()["low_confidence_share"] == pytest.approx(
        sum(r["confidence"] < 0.6 for r in rows) / len(rows))
    assert stats.ood == sum(1 for r in rows if "ood_skeleton" in r["warnings"])
    conf = np.array([r["confidence"] for r in rows])
    for q, got in zip((0.05, 0.5), stats.confidence_quantiles((0.05, 0.5)), strict=True):
        assert got == pytest.approx(np.quantile(conf, q), abs=0.006)


def test_chunks_fold_to_the_whole(table):
    names = class_names()
    whole = PredictionStats(names).add(table)
    parts = PredictionStats(names)
    for start in range(0, table.num_rows, 400):
        parts.add(table.slice(start, 400))
    assert parts.frames == whole.frames and parts.labels == whole.labels
    assert np.allclose(parts.confusion, whole.confusion)
    assert np.array_equal(parts.confidence_counts, whole.confidence_counts)
    est = estimate_performance(probabilities(table, len(names)))
    assert np.trace(parts.confusion) / parts.confusion.sum() == pytest.approx(est["accuracy"])


def test_binned_matches_direct_binning(table):
    from tasks.monitor.drift import CONFIDENCE_EDGES, confidence_counts

    stats = PredictionStats(class_names()).add(table)
    direct = confidence_counts(table.column("confidence").to_numpy())
    assert np.array_equal(stats.binned(CONFIDENCE_EDGES), direct)
