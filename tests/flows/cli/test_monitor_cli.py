"""`posebatch monitor`: the history's trend as a table and as JSON, and an empty history."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flows.cli import app
from tests.tasks.monitor.test_trend import write_history


def test_monitor_json_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEBATCH_MONITOR_PSI_THRESHOLD", "0.3")
    rows = write_history(str(tmp_path / "output"))
    res = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path), "--days", "100000",
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["runs"] == 4 and len(out["history"]) == 4
    assert out["metrics"]["est_accuracy"]["last"] == rows[-1]["est_accuracy"]
    assert out["thresholds"] == {"psi": 0.3, "min_est_accuracy": 0.85}  # env, default
    assert "class_mix" not in out["history"][0]  # lists stay out of the scalar history
    text = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path), "--days", "100000"])
    assert text.exit_code == 0 and "class_mix_psi" in text.stdout and "run-3" in text.stdout


def test_monitor_without_history(tmp_path):
    res = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["runs"] == 0
    bad = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path), "--days", "0"])
    assert bad.exit_code == 2
