"""Parquet outputs: schema and metadata, columns' meaning, hive parts, and compaction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tasks.classify.infer import ChunkResult, FileOutcome
from tasks.classify.ledger import COMMITS, Ledger
from tasks.classify.outputs import commit_chunk, compact, judge_chunk, list_parts, predictions_table
from tasks.io.schema import PREDICTIONS_SCHEMA, REJECTIONS_SCHEMA

NAMES = ["a", "b", "c"]


def chunk(paths: list[str], frames: list[int], bad: dict[str, str] | None = None,
          seed: int = 0) -> ChunkResult:
    """A hand-made chunk: ``frames[i]`` frames for file i, or a rejection from ``bad``."""
    bad = bad or {}
    rng = np.random.default_rng(seed)
    files, fidx, fr = [], [], []
    for i, (p, n) in enumerate(zip(paths, frames, strict=True)):
        if p in bad:
            files.append(FileOutcome(p, sha256=f"sha-{p}-{seed}", reason=bad[p], detail="why"))
            continue
        files.append(FileOutcome(p, sha256=f"sha-{p}-{seed}", frames=n,
                                 warnings=[["no_peak"] if k == 0 else [] for k in range(n)]))
        fidx += [i] * n
        fr += list(range(n))
    p = rng.dirichlet(np.ones(len(NAMES)), size=len(fidx)).astype(np.float32)
    return ChunkResult(files, np.array(fidx, np.int32), np.array(fr, np.int32), p, NAMES, "v0007")


def test_prediction_rows_follow_the_schema_and_carry_the_model_in_metadata():
    res = chunk(["b1/x.npy", "b1/y.npy", "root.npy"], [2, 1, 1])
    from datetime import UTC, datetime

    judged = judge_chunk(res, Ledger("/nonexistent-output"))
    table = predictions_table(judged, datetime(2026, 3, 4, 5, 6, tzinfo=UTC), "run-1")
    assert table.schema.remove_metadata() == PREDICTIONS_SCHEMA.remove_metadata()
    meta = table.schema.metadata
    assert json.loads(meta[b"posebatch.class_names"]) == NAMES
    assert meta[b"posebatch.model_version"] == b"v0007"
    rows = table.to_pylist()
    assert [(r["source_path"], r["batch"], r["frame_index"]) for r in rows] == [
        ("b1/x.npy", "b1", 0), ("b1/x.npy", "b1", 1), ("b1/y.npy", "b1", 0), ("root.npy", "", 0)]
    for r, p in zip(rows, res.probabilities, strict=True):
        assert r["label"] == NAMES[int(np.argmax(p))]
        assert np.isclose(r["confidence"], p.max())
        assert np.allclose(r["probabilities"], p)
        assert r["top2_label"] == NAMES[int(np.argsort(-p)[1])]
        assert np.isclose(r["entropy"], -(p * np.log(p)).sum(), atol=1e-5)
        assert r["model_version"] == "v0007" and r["flow_run_id"] == "run-1"
    assert rows[0]["warnings"] == ["no_peak"] and rows[1]["warnings"] == []


def test_commit_writes_hive_parts_readable_as_datasets(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    res = chunk(["b/1.npy", "b/2.npy", "b/3.npy"], [1, 1, 3], bad={"b/2.npy": "truncated"})
    sizes = {p: (10, 20) for p in ("b/1.npy", "b/2.npy", "b/3.npy")}
    record, _ = commit_chunk(led, judge_chunk(res, led), sizes, "c0ffee", "run-9")
    preds = ds.dataset(tmp_path / "predictions", partitioning="hive").to_table()
    assert preds.num_rows == 4
    assert set(preds.column("date").to_pylist()) == {record.created_at[:10]}
    rej = ds.dataset(tmp_path / "rejections", partitioning="hive").to_table()
    assert rej.select(REJECTIONS_SCHEMA.names).to_pylist()[0] | {"rejected_at": None} == {
        "source_path": "b/2.npy", "content_sha256": "sha-b/2.npy-0", "reason": "truncated",
        "detail": "why", "rejected_at": None, "flow_run_id": "run-9"}
    entries = Ledger.load(str(tmp_path)).entries.to_pylist()
    assert [(e["path"], e["status"], e["frames"], e["reason"]) for e in entries] == [
        ("b/1.npy", "classified", 1, None), ("b/2.npy", "rejected", 0, "truncated"),
        ("b/3.npy", "classified", 3, None)]
    assert all((e["size"], e["mtime_ns"]) == (10, 20) for e in entries)
    # Nothing staged or temporary is left next to the data.
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                   if p.is_file() and "_posebatch" not in p.parts)
    assert len(files) == 2 and all("/date=" in f and f.endswith(".parquet") for f in files)


def test_compaction_merges_parts_without_losing_or_doubling_rows(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    for k in range(5):
        res = chunk([f"b/{k}.npy", f"b/{k}x.npy"], [2, 1], seed=k,
                    bad={f"b/{k}x.npy": "not_npy"} if k % 2 else None)
        commit_chunk(led, judge_chunk(res, led), {}, f"id{k}", None)
    before = ds.dataset(tmp_path / "predictions", partitioning="hive").to_table()
    assert sum(len(v) for v in list_parts(led.loc, "predictions").values()) == 5
    led.fold()
    stats = compact(led)
    assert stats["partitions"] == 2 and stats["parts_after"] == 2
    after = ds.dataset(tmp_path / "predictions", partitioning="hive").to_table()
    key = ["source_path", "frame_index"]
    assert sorted(after.select(key).to_pylist(), key=str) == \
        sorted(before.select(key).to_pylist(), key=str)
    parts = list_parts(led.loc, "predictions")
    assert [len(v) for v in parts.values()] == [1]
    one = pq.read_table(tmp_path / next(iter(parts.values()))[0])
    assert one.schema.metadata[b"posebatch.model_version"] == b"v0007"
    assert ds.dataset(tmp_path / "rejections", partitioning="hive").count_rows() == 2


def test_compaction_killed_after_its_commit_record_is_completed_by_reconcile(tmp_path: Path,
                                                                           monkeypatch):
    led = Ledger.load(str(tmp_path))
    for k in range(3):
        commit_chunk(led, judge_chunk(chunk([f"{k}.npy"], [2], seed=k), led), {}, f"i{k}", None)
    led.fold()
    # Simulate the kill right after the record: finalize does nothing this time.
    monkeypatch.setattr(Ledger, "finalize", lambda self, record: 0)
    compact(led, datasets=("predictions",))
    monkeypatch.undo()
    assert len(list((tmp_path / COMMITS).iterdir())) == 1
    staged_now = ds.dataset(tmp_path / "predictions", partitioning="hive").count_rows()
    assert staged_now == 6  # old parts still there, new one still staged
    fresh = Ledger.load(str(tmp_path))
    assert fresh.reconcile()["rolled_forward"] == 1
    assert ds.dataset(tmp_path / "predictions", partitioning="hive").count_rows() == 6
    assert [len(v) for v in list_parts(fresh.loc, "predictions").values()] == [1]
