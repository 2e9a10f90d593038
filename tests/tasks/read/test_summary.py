"""Per-day/label summaries, class-mix drift and the markdown rendering, against plain Python."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from tasks.read.summary import (
    class_mix_drift,
    label_counts,
    rollup,
    summarize,
    summary_markdown,
)
from tasks.synth.sample_outputs import day_of, synth_predictions, synth_rejections


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return synth_predictions(2500, date(2024, 6, 1), 3, seed=5)


def test_summarize_matches_plain_python(table):
    rows = table.to_pylist()
    days = day_of(table, "classified_at")
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for day, r in zip(days, rows, strict=True):
        groups[(date.fromisoformat(str(day)), r["label"])].append(r["confidence"])
    got = summarize(table, low_confidence=0.7).to_pylist()
    assert [(g["date"], g["label"]) for g in got] == sorted(groups)
    for g in got:
        conf = groups[(g["date"], g["label"])]
        assert g["frames"] == len(conf)
        assert g["mean_confidence"] == pytest.approx(sum(conf) / len(conf))
        assert g["low_confidence_share"] == pytest.approx(
            sum(c < 0.7 for c in conf) / len(conf))


def test_summarize_prefers_the_partition_column(table):
    """A table read from the dataset carries ``date``; that value is used as is."""
    with_date = table.append_column("date", pa.array([date(2030, 1, 1)] * table.num_rows))
    assert set(summarize(with_date).column("date").to_pylist()) == {date(2030, 1, 1)}


def test_rollup_weights_by_frames(table):
    summary = summarize(table, 0.5)
    by_label = {r["label"]: r for r in rollup(summary, "label").to_pylist()}
    rows = table.to_pylist()
    for label, r in by_label.items():
        conf = [x["confidence"] for x in rows if x["label"] == label]
        assert r["frames"] == len(conf)
        assert r["mean_confidence"] == pytest.approx(np.mean(conf))
        assert r["low_confidence_share"] == pytest.approx(np.mean(np.array(conf) < 0.5))
    by_day = rollup(summary, "date").to_pylist()
    assert sum(r["frames"] for r in by_day) == table.num_rows
    assert label_counts(table) == Counter(x["label"] for x in rows)


def test_drift_zero_for_the_same_mix_and_large_for_a_shift():
    from scipy.stats import chisquare

    training = {"a": 500, "b": 300, "c": 200}
    same = class_mix_drift({"a": 50, "b": 30, "c": 20}, training)
    assert same["psi"] == pytest.approx(0.0, abs=1e-9)
    assert same["verdict"] == "stable" and same["p_value"] > 0.9
    shifted = class_mix_drift({"a": 10, "b": 30, "c": 60}, training)
    assert shifted["psi"] > 0.25 and shifted["verdict"] == "major shift"
    # chi-square equals scipy's goodness of fit with the smoothed training shares
    exp = np.array([500.5, 300.5, 200.5])
    ref = chisquare([10, 30, 60], exp / exp.sum() * 100)
    assert shifted["chi2"] == pytest.approx(ref.statistic)
    assert shifted["p_value"] == pytest.approx(ref.pvalue)
    # PSI by hand
    p, q = np.array([0.1, 0.3, 0.6]), np.array([0.5, 0.3, 0.2])
    assert shifted["psi"] == pytest.approx(float(((p - q) * np.log(p / q)).sum()))


def test_drift_handles_classes_seen_on_one_side_only():
    d = class_mix_drift({"a": 10, "new": 5}, {"a": 10, "gone": 10})
    assert d["classes"] == ["a", "gone", "new"]
    assert np.isfinite(d["psi"]) and np.isfinite(d["chi2"]) and d["psi"] > 0.25
    with pytest.raises(ValueError):
        class_mix_drift({}, {"a": 1})


def test_summary_markdown(table):
    rej = synth_rejections(9, date(2024, 6, 1), 3, seed=1)
    md = summary_markdown(table, 0.5, rejections=rej, training_distribution={"dummy": 1})
    assert md.startswith("# posebatch summary")
    assert f"**{table.num_rows}** frames classified, **9** files rejected" in md
    counts = label_counts(table)
    for label, n in counts.items():
        assert f"| {label} | {n} | {n / table.num_rows:.1%} |" in md
    assert "## By day" in md and "## Rejections by reason" in md
    assert "PSI **" in md
    reasons = Counter(rej.column("reason").to_pylist())
    for reason, n in reasons.items():
        assert f"| {reason} | {n} |" in md
    empty = summary_markdown(table.slice(0, 0))
    assert "**0** frames classified" in empty and "## By label" not in empty
