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


def test_feedback_twice_counts_once_and_monitor_shows_realized(tmp_path):
    from datetime import date

    from tasks.io.schema import PREDICTIONS
    from tasks.synth.sample_outputs import synth_predictions, write_partitioned
    from tests.tasks.monitor.test_feedback import labels_csv

    out = tmp_path / "output"
    write_history(str(out))                              # runs run-0 .. run-3
    preds = synth_predictions(200, date(2024, 6, 1), 1, seed=9, batches=4)
    write_partitioned(preds, out, PREDICTIONS)           # 50 frames per run
    csv = tmp_path / "labels.csv"
    csv.write_text(labels_csv(preds, range(100)) + "ghost/x.npy,0,flying\n")
    args = ["feedback", str(csv), "--data", str(tmp_path), "--json"]
    first = json.loads(CliRunner().invoke(app, args).stdout.strip().splitlines()[-1])
    assert first["matched_frames"] == 100 and first["recorded"]
    assert first["rejected_rows"] == 1 and first["unmatched_rows"] == 0
    second = json.loads(CliRunner().invoke(app, args).stdout.strip().splitlines()[-1])
    assert second["matched_frames"] == 100 and not second["recorded"]

    res = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path), "--days", "100000",
                                   "--json"])
    hist = {r["flow_run_id"]: r for r in
            json.loads(res.stdout.strip().splitlines()[-1])["history"]}
    truth = {f"run-{b}": [k % 3 != 0 for k in range(50 * b, 50 * b + 50)] for b in (0, 1)}
    for run, right in truth.items():
        assert hist[run]["labeled_frames"] == 50
        assert hist[run]["accuracy"] == sum(right) / 50
    assert hist["run-2"]["accuracy"] is None and hist["run-3"]["labeled_frames"] is None
    text = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path), "--days", "100000"])
    assert "macro_f1" in text.stdout and "accuracy" in text.stdout
    bad = CliRunner().invoke(app, ["feedback", str(tmp_path / "none.csv"), "--data",
                                   str(tmp_path)])
    assert bad.exit_code == 2 and "none.csv" in bad.stderr


def test_feedback_that_matches_nothing_is_an_error(tmp_path):
    from datetime import date

    from tasks.io.schema import PREDICTIONS
    from tasks.synth.sample_outputs import synth_predictions, write_partitioned

    out = tmp_path / "output"
    preds = synth_predictions(20, date(2024, 6, 1), 1, seed=9)
    write_partitioned(preds, out, PREDICTIONS)
    label = preds["label"][0].as_py()
    csv = tmp_path / "other.csv"
    csv.write_text(f"source_path,label\nelsewhere/a.npy,{label}\nelsewhere/b.npy,{label}\n")
    res = CliRunner().invoke(app, ["feedback", str(csv), "--data", str(tmp_path), "--json"])
    assert res.exit_code == 2, res.output
    errors = res.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: 0 of the 2 label rows match")
    assert "'elsewhere/a.npy'" in errors[0] and str(out) in errors[0]
    assert json.loads(res.stdout.strip().splitlines()[-1])["ok"] is False
    assert not (out / "monitoring").exists()
    src = preds["source_path"][0].as_py()
    csv.write_text(csv.read_text() + f"{src},{label}\n")   # one row matches: counts, exit 0
    res = CliRunner().invoke(app, ["feedback", str(csv), "--data", str(tmp_path), "--json"])
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert res.exit_code == 0 and got["unmatched_rows"] == 2 and got["matched_frames"] >= 1
