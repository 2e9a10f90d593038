"""The run-history row and its writer: schema, values against plain Python, idempotent
atomic files that DuckDB reads as one hive-partitioned table."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pytest

from models.spec import class_names
from tasks.monitor.history import RUNS_SCHEMA, append_run, monitor_row, runs_glob
from tasks.monitor.inputs import InputStats
from tasks.monitor.predictions import PredictionStats
from tasks.monitor.reference import build_reference
from tasks.synth.generate import synth_dataset
from tasks.synth.sample_outputs import synth_predictions

AT = datetime(2024, 6, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def parts() -> dict:
    names = class_names()
    table = synth_predictions(800, date(2024, 6, 2), 1, seed=3)
    stats = InputStats().add(synth_dataset(3, seed=51).frames)
    probs = np.random.default_rng(1).dirichlet(np.full(17, 0.2), size=100)
    ref = build_reference(InputStats().add(synth_dataset(3, seed=52).frames), probs,
                          dict.fromkeys(names, 10), names)
    info = {"flow_run_id": "run-1", "run_at": AT, "model_version": "v0001", "files": 40,
            "files_rejected": 2, "seconds": 4.0, "class_names": names}
    return {"table": table, "stats": stats, "ref": ref, "info": info}


def test_row_matches_schema_and_plain_python(parts):
    row = monitor_row(parts["table"], parts["stats"], parts["ref"], parts["info"])
    assert list(row) == RUNS_SCHEMA.names
    pa.Table.from_pylist([row], schema=RUNS_SCHEMA)  # every value fits its column
    rows = parts["table"].to_pylist()
    assert row["frames"] == 800 and row["frames_per_second"] == pytest.approx(200.0)
    assert {m["label"]: m["frames"] for m in row["class_mix"]} == Counter(
        r["label"] for r in rows)
    assert row["est_accuracy"] == pytest.approx(
        np.mean([max(r["probabilities"]) for r in rows]), abs=1e-5)
    assert row["low_confidence_share"] == pytest.approx(
        np.mean([r["confidence"] < 0.5 for r in rows]))
    assert len(row["joint_height_psi"]) == 17
    assert row["input_psi"] == pytest.approx(np.mean(row["joint_height_psi"]))
    for key in ("class_mix_psi", "confidence_psi", "implausible_share", "missing_rate"):
        assert row[key] is not None and np.isfinite(row[key])


def test_folded_chunks_give_the_same_row(parts):
    folded = PredictionStats(class_names())
    for start in (0, 300, 600):
        folded.add(parts["table"].slice(start, 300))
    a = monitor_row(parts["table"], parts["stats"], parts["ref"], parts["info"])
    b = monitor_row(folded, parts["stats"], parts["ref"], parts["info"])
    assert a.keys() == b.keys()
    for k in ("est_accuracy", "est_macro_f1", "class_mix_psi", "confidence_psi"):
        assert a[k] == pytest.approx(b[k])


def test_without_reference_or_inputs_drift_is_null(parts):
    row = monitor_row(parts["table"], None, None, {"flow_run_id": "x",
                                                   "class_names": class_names()})
    for key in ("class_mix_psi", "input_psi", "confidence_psi", "joint_height_p50",
                "implausible_share", "seconds", "frames_per_second"):
        assert row[key] is None
    assert row["est_accuracy"] is not None


def test_class_names_from_the_schema_metadata(parts):
    from tasks.io.schema import with_model_metadata

    table = parts["table"]
    table = table.replace_schema_metadata(
        with_model_metadata(table.schema, class_names(), "v0001").metadata)
    row = monitor_row(table, None, None, {"flow_run_id": "x"})
    assert row["frames"] == 800
    with pytest.raises(ValueError, match="class names"):
        monitor_row(parts["table"], None, None, {"flow_run_id": "x"})


def test_append_is_atomic_idempotent_and_readable_by_duckdb(parts, tmp_path):
    import duckdb

    row = monitor_row(parts["table"], parts["stats"], parts["ref"], parts["info"])
    first = append_run(str(tmp_path), row)
    assert first.endswith("monitoring/runs/date=2024-06-02/run-1.parquet")
    append_run(str(tmp_path), {**row, "frames": 801})            # the same run again
    append_run(str(tmp_path), {**row, "flow_run_id": "run-2"})
    later = {**row, "flow_run_id": "run-2", "run_at": datetime(2024, 6, 3, tzinfo=UTC)}
    append_run(str(tmp_path), later)                             # rerun after midnight
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                   if p.is_file())
    assert files == ["monitoring/runs/date=2024-06-02/run-1.parquet",
                     "monitoring/runs/date=2024-06-03/run-2.parquet"]  # no temp file left
    got = duckdb.sql(f"SELECT flow_run_id, frames, date, len(joint_height_psi) AS joints "
                     f"FROM read_parquet('{runs_glob(str(tmp_path))}', "
                     "hive_partitioning=true) ORDER BY 1").fetchall()
    assert [(r[0], r[1], str(r[2]), r[3]) for r in got] == [
        ("run-1", 801, "2024-06-02", 17), ("run-2", 800, "2024-06-03", 17)]
