"""The retraining flow end to end on a real Prefect API: a tiny retrain through the CLI
registers and promotes a model, the classification flow then uses it, and a second retrain
that cannot clear the promotion margin is registered but not promoted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.retrain import retrain_flow
from models.registry import Registry
from models.spec import class_names
from tasks.synth.generate import generate_dataset

pytestmark = pytest.mark.slow

# Importing a flow module imports prefect.main, which configures Prefect's console log handler
# on the CURRENT sys.stderr. Done inside CliRunner.invoke, that is the runner's temporary
# stream, closed afterwards, and every later flow run in this process fails to log. The
# import above does it once, on the real stderr, before any CLI call.


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("retrain_root")
    generate_dataset(out, per_class=6, seed=21, incoming_batches=1, incoming_per_batch=12)
    return out


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_retrain_registers_promotes_and_classify_uses_it(prefect_server, root: Path) -> None:
    res = CliRunner().invoke(app, ["retrain", "--data", str(root), "--epochs", "2",
                                   "--seed", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = _last_json(res.stdout)
    assert out["ok"] and out["version"] == "v0001" and out["promoted"]
    assert "first model" in out["reason"]
    assert out["split"]["method"] == "group"
    assert set(out["metrics"]) == {"cnn", "logreg", "hgb", "majority"}
    assert "epoch 1/2" in res.stderr  # progress lines on stderr, not stdout

    reg = Registry(root / "registry")
    entry = reg.resolve()
    assert entry.version == "v0001"
    meta = entry.metadata
    for key in ("class_names", "input_layout", "temperature", "metrics", "params",
                "data_fingerprint", "library_versions", "created_at", "version"):
        assert key in meta, key
    assert meta["class_names"] == class_names() and meta["output"] == "logits"
    assert meta["input_layout"]["shape"] == [None, 17, 64, 48]
    assert meta["temperature"] > 0 and len(meta["data_fingerprint"]) == 64
    assert meta["split"]["method"] == "group"
    sides = meta["split"]["groups"]
    assert not set(sides["train"]) & set(sides["test"])
    # The ONNX inference file, checked on the test split (tasks/train/inference_artifact.py).
    onnx = meta["onnx"]
    assert onnx["status"] == "verified" and (entry.path / "model.onnx").is_file(), onnx
    assert onnx["check"]["checked_on"].startswith("test split")
    assert onnx["check"]["frames"] == meta["split"]["frames"]["test"]
    assert onnx["check"]["argmax_agreement"] == 1.0
    # The drift report's reference: training-split frames per class, every class listed.
    dist = meta["class_distribution"]
    assert list(dist) == class_names() and all(v > 0 for v in dist.values())
    assert sum(dist.values()) == meta["split"]["frames"]["train"] == out["split"]["frames"]["train"]
    from tasks.read.report import training_distribution

    shares, where = training_distribution(root / "registry")
    assert shares == {k: float(v) for k, v in dist.items()} and "v0001" in where
    report = (entry.path / "report.md").read_text()
    assert "| cnn |" in report and "| majority |" in report and "ECE" in report
    assert "training frames per class: action_down " in report
    # Robustness: the shifted test split is scored and reported, and the model carries its
    # out-of-distribution rule (fitted on training features, threshold from validation).
    assert "## Robustness: the same test files, shifted" in report
    assert 0.0 <= out["shift_metrics"]["cnn"]["macro_f1"] <= 1.0
    assert meta["metrics"]["shift"]["cnn"]["n"] > 0
    assert meta["ood"]["threshold"] > 0 and len(meta["ood"]["means"]) == len(class_names())
    # The run's monitoring row: the new model on its own test split (kind retrain).
    import duckdb

    from tasks.monitor.history import runs_glob

    (row,) = duckdb.sql(f"select kind, model_version, frames, est_accuracy from read_parquet("
                        f"'{runs_glob(str(root / 'output'))}', hive_partitioning=true)"
                        ).fetchall()
    assert row[:3] == ("retrain", "v0001", out["split"]["frames"]["test"])
    assert 0.0 < row[3] <= 1.0
    # The monitoring reference (tasks/monitor): the test split's heatmap statistics and
    # calibrated confidences, the training mix; strict JSON, so NaN never reaches it.
    mon = meta["monitor"]
    assert mon["frames"] == meta["split"]["frames"]["test"] and mon["class_distribution"] == dist
    assert len(mon["inputs"]["height_edges"]) == 17 and 0.0 <= mon["est_accuracy"] <= 1.0
    json.dumps(mon, allow_nan=False)
    assert meta["metrics"]["calibration"]["fitted_on"] == "validation split, clean and shifted"
    assert (entry.path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert [h["to"] for h in reg.history()] == ["v0001"]

    from flows.classify import classify_flow

    classify_flow(data_root=str(root), quiet_seconds=0)
    table = ds.dataset(root / "output" / "predictions", partitioning="hive").to_table()
    assert table.num_rows == 12
    assert set(table.column("model_version").to_pylist()) == {"v0001"}
    assert set(table.column("label").to_pylist()) <= set(class_names())


def scores(reason: str) -> tuple[float, float]:
    """(challenger, production) macro-F1 as the gate's reason states them."""
    m = re.search(r"challenger macro-F1 ([0-9.]+) vs production ([0-9.]+)", reason)
    assert m, reason
    return float(m.group(1)), float(m.group(2))


def shift_scores(reason: str) -> tuple[float, float, float]:
    """(challenger, production, floor) on the shifted split, from the gate's reason."""
    m = re.search(r"shifted test split ([0-9.]+) vs production ([0-9.]+) - \|margin\| "
                  r"[0-9.]+ = (-?[0-9.]+)", reason)
    assert m, reason
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def test_gate_keeps_production_when_the_challenger_is_not_better(prefect_server,
                                                                 root: Path) -> None:
    reg = Registry(root / "registry")
    if reg.production_version() is None:  # run alone: make a champion first
        retrain_flow(data_root=str(root), epochs=1, seed=1)
    champion = reg.production_version()
    before = len(reg.history())
    out = retrain_flow(data_root=str(root), epochs=1, seed=2, margin=1.0)
    assert not out["promoted"] and out["reason"].startswith("not promoted")
    assert "+ margin 1.0000" in out["reason"]
    assert "production" in out["metrics"]  # the champion was re-evaluated on the new split
    assert reg.production_version() == champion
    assert len(reg.history()) == before  # nothing promoted, nothing appended
    assert out["version"] in reg.versions()  # but the challenger is registered
    report = (Path(out["path"]) / "report.md").read_text()
    assert "not promoted" in report and "| production |" in report
    # Honest gate: test groups the champion trained or calibrated on are left out of the
    # comparison (the new split, with another seed, reshuffles people between sides).
    old_sides = reg.get(champion).metadata["split"]["groups"]
    new_test = set(reg.get(out["version"]).metadata["split"]["groups"]["test"])
    seen = new_test & (set(old_sides["train"]) | set(old_sides["val"]))
    if not seen:
        assert "left out" not in out["reason"] and "flatters" not in out["reason"]
    elif seen == new_test:
        assert "flatters production" in out["reason"]
    else:
        assert "left out)" in out["reason"] and "never trained on" in out["reason"]

    # The gate decides on the scores: the same training (same seed) judged with margins just
    # above and just below the measured difference flips from "no" to "yes".
    challenger, production = scores(out["reason"])
    gap = challenger - production
    above = retrain_flow(data_root=str(root), epochs=1, seed=2, margin=gap + 0.02)
    assert not above["promoted"], above["reason"]
    assert scores(above["reason"]) == pytest.approx((challenger, production), abs=0.01)
    below = retrain_flow(data_root=str(root), epochs=1, seed=2, margin=gap - 0.02)
    if below["promoted"]:
        assert below["reason"].startswith("promoted: challenger")
        assert reg.production_version() == below["version"]
        assert reg.history()[-1]["from"] == champion
        assert reg.history()[-1]["action"] == "promote"
    else:  # cleared the first rule, refused by the shift rule: its numbers must say so
        assert below["reason"].startswith("not promoted: worse on shift"), below["reason"]
        mine, theirs, floor = shift_scores(below["reason"])
        assert mine < floor == pytest.approx(theirs - abs(gap - 0.02), abs=1e-3)
        assert reg.production_version() == champion

    before_forced = reg.production_version()
    forced = retrain_flow(data_root=str(root), epochs=1, seed=3, promote="always")
    assert forced["promoted"] and reg.production_version() == forced["version"]
    assert reg.history()[-1]["from"] == before_forced


def test_tune_runs_a_bounded_search_and_records_it(prefect_server, tmp_path: Path) -> None:
    generate_dataset(tmp_path, per_class=4, seed=5)
    out = retrain_flow(data_root=str(tmp_path), epochs=1, seed=0, tune=True,
                       tune_max_trials=2, tune_budget_seconds=120)
    meta = Registry(tmp_path / "registry").get(out["version"]).metadata
    assert meta["params"]["tuned"] is True
    width = meta["params"]["filters"][0]
    assert width in (16, 32, 48) and meta["params"]["filters"] == [width, 2 * width, 3 * width]
    assert meta["params"]["dense"] in (64, 128, 256)
    report = (Path(out["path"]) / "report.md").read_text()
    assert "Hyperparameter search (" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and "{'width'" in line]
    assert 1 <= len(rows) <= 2  # at most tune_max_trials trials


@pytest.mark.parametrize("trained_on, excluded", [("none", 0), ("one", 1), ("all", 2)])
def test_gate_leaves_out_test_groups_production_trained_on(root: Path, tmp_path: Path,
                                                          trained_on: str,
                                                          excluded: int) -> None:
    from flows.retrain import champion_task
    from tasks.train.dataset import Split, scan_labeled
    from tests.support.models import tiny_cnn

    scan = scan_labeled(root / "labeled", "subject", 4096)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(scan.groups()):
        by_group.setdefault(g, []).append(i)
    g0, g1, g2 = sorted(by_group)[:3]
    # The new test side holds two groups' files of one class (files 0 of each group).
    test = [by_group[g0][0], by_group[g1][0]]
    split = Split(train=by_group[g2], val=[], test=test, method="group",
                  groups={"train": [g2], "val": [], "test": [g0, g1]})
    prod_train = {"none": [g2], "one": [g0], "all": [g0, g1]}[trained_on]
    reg = Registry(tmp_path / "registry")
    v = reg.register(tiny_cnn(len(scan.class_names)),
                     {"class_names": scan.class_names, "temperature": 1.0,
                      "split": {"groups": {"train": prod_train, "val": []}}}).version
    reg.promote(v, "champion")

    out = champion_task.fn(str(tmp_path / "registry"), scan, split, 4096,
                           tiny_cnn(len(scan.class_names), seed=1), 1.0)
    assert out["version"] == v
    if trained_on == "all":  # nothing fair is left: scored on everything, and said so
        assert out["excluded_files"] == 2 and "flatters production" in out["note"]
        assert out["metrics"]["n"] == 2
    else:
        assert out["excluded_files"] == excluded and out["note"] == ""
        assert out["metrics"]["n"] == 2 - excluded
    # Both models scored on one shifted copy of the same (fair) files: the gate's shift rule.
    assert out["shift_metrics"]["n"] == out["metrics"]["n"]
    assert out["challenger_shift_metrics"]["n"] == out["metrics"]["n"]
    if excluded == 1:  # a strict subset: the challenger is re-scored on the same files
        assert out["challenger_metrics"]["n"] == 1
    else:  # the whole test split: the flow's own test score is already on the same files
        assert "challenger_metrics" not in out


def test_gate_never_overwrites_a_production_change_made_during_training(
        prefect_server, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate decides against the production it re-evaluated; an operator's promotion (or
    rollback) after that decision wins, and the run says it did not promote."""
    import flows.retrain as rt

    reg = Registry(root / "registry")
    if reg.production_version() is None:  # run alone: make a champion first
        retrain_flow(data_root=str(root), epochs=1, seed=1)
    before = reg.production_version()
    others = [v for v in reg.versions() if v != before]
    other = others[0] if others else retrain_flow(data_root=str(root), epochs=1, seed=4,
                                                  promote="never")["version"]
    original = rt.champion_task

    def champion_then_operator(*args, **kwargs):
        out = original(*args, **kwargs)
        reg.promote(other, "operator, while the challenger was being judged")
        return out

    monkeypatch.setattr(rt, "champion_task", champion_then_operator)
    out = retrain_flow(data_root=str(root), epochs=1, seed=5, margin=-1.0)  # gate: promote
    assert not out["promoted"]
    assert out["reason"].startswith(f"not promoted: production changed from {before} to "
                                    f"{other}")
    assert reg.production_version() == other == out["production"]
    assert reg.history()[-1]["to"] == other  # the operator's change is the last record
    report = (Path(out["path"]) / "report.md").read_text()
    assert "production changed from" in report
