"""``posebatch demo`` (the README's first command) on a real Prefect API: the first run
generates, trains and classifies; the second keeps data and model and finds nothing new."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

import flows.classify  # noqa: F401  (see below)
import flows.retrain  # noqa: F401
from flows.cli import app

# Importing a flow module imports prefect.main, which configures Prefect's console log handler
# on the CURRENT sys.stderr. Done inside CliRunner.invoke, that is the runner's temporary
# stream, closed afterwards, and every later flow run in this process fails to log (when this
# file runs without the rest of the suite, nothing imported them earlier). Here, once, first.

pytestmark = pytest.mark.slow


def _demo(root: Path) -> dict:
    res = CliRunner().invoke(app, ["demo", "--data", str(root), "--per-class", "6",
                                   "--epochs", "1", "--incoming-batches", "2",
                                   "--incoming-per-batch", "5", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_demo_end_to_end_then_idempotent(prefect_server, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo quiets Prefect's console handler through the environment (for its own
    # process); undo that here so later tests' subprocesses keep their log lines.
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO")
    monkeypatch.delenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL")
    root = tmp_path / "data"
    first = _demo(root)
    assert first["ok"] and first["generate"]["generated"]
    assert first["generate"]["labeled"] == 6 * 17 and first["generate"]["incoming"] == 10
    assert first["model"]["trained"] and first["model"]["version"] == "v0001"
    assert first["classify"]["classified"] == 10 and first["classify"]["frames"] == 10
    table = ds.dataset(root / "output" / "predictions", partitioning="hive").to_table()
    assert table.num_rows == 10
    with open(root / "incoming_labels.csv", newline="") as fh:
        truth = {r["source_path"]: r["label"] for r in csv.DictReader(fh)}
    right = sum(truth[p] == lab for p, lab in zip(table.column("source_path").to_pylist(),
                                                  table.column("label").to_pylist(),
                                                  strict=True))
    assert first["check"] == {"frames": 10, "correct": right, "accuracy": round(right / 10, 4)}
    assert set(table.column("model_version").to_pylist()) == {"v0001"}

    second = _demo(root)
    assert not second["generate"]["generated"] and not second["model"]["trained"]
    assert second["model"]["version"] == "v0001"
    assert second["classify"]["new"] == 0 and second["classify"]["already_processed"] == 10
    assert second["check"]["frames"] == 10  # still checked against what is in the output


def test_demo_help_documents_the_knobs() -> None:
    res = CliRunner().invoke(app, ["demo", "--help"])
    assert res.exit_code == 0
    for opt in ("--per-class", "--epochs", "--incoming-batches", "--data", "--json"):
        assert opt in res.output
