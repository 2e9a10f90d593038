"""Reading the history back: the day window, and trends against plain Python."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from models.spec import class_names
from tasks.monitor.history import append_run, monitor_row
from tasks.monitor.trend import read_runs, trend
from tasks.synth.sample_outputs import synth_predictions


def write_history(out: str, n: int = 4) -> list[dict]:
    """``n`` runs on consecutive days from 2024-06-01, the class mix ever more skewed."""
    rows = []
    for i in range(n):
        weights = np.ones(17)
        weights[0] += 3 * i
        table = synth_predictions(300, date(2024, 6, 1 + i), 1, seed=i,
                                  class_weights=weights)
        ref = {"class_distribution": dict.fromkeys(class_names(), 10)}
        row = monitor_row(table, None, ref, {
            "flow_run_id": f"run-{i}", "run_at": datetime(2024, 6, 1 + i, 2, tzinfo=UTC),
            "class_names": class_names(), "seconds": 2.0})
        append_run(out, row)
        rows.append(row)
    return rows


def test_window_and_order(tmp_path):
    write_history(str(tmp_path))
    every = read_runs(str(tmp_path))
    assert every.column("flow_run_id").to_pylist() == ["run-0", "run-1", "run-2", "run-3"]
    last2 = read_runs(str(tmp_path), days=2, today=date(2024, 6, 4))
    assert last2.column("flow_run_id").to_pylist() == ["run-2", "run-3"]
    assert read_runs(str(tmp_path / "nothing")).num_rows == 0


def test_trend_against_plain_python(tmp_path):
    rows = write_history(str(tmp_path))
    got = trend(read_runs(str(tmp_path)), psi_threshold=0.25, min_est_accuracy=0.0)
    psis = [r["class_mix_psi"] for r in rows]
    m = got["metrics"]["class_mix_psi"]
    assert got["runs"] == 4 and m["first"] == pytest.approx(psis[0])
    assert m["last"] == pytest.approx(psis[-1]) and m["mean"] == pytest.approx(np.mean(psis))
    assert m["slope_per_run"] > 0  # the mix skews more every day
    assert got["metrics"]["input_psi"] is None  # no input statistics were recorded
    flagged = [a["flow_run_id"] for a in got["alerts"]]
    assert flagged == [r["flow_run_id"] for r in rows if r["class_mix_psi"] > 0.25]
    assert flagged and flagged != [r["flow_run_id"] for r in rows]
