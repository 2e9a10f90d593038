"""Synthetic prediction and rejection datasets in the real schema, for tests, benches, demos.

Writing them the way the classification flow lays them out (hive ``date=YYYY-MM-DD``
partitions of ``part-*.parquet`` files) lets the query side be built and measured without a
trained model. The rows are plausible (probabilities from a softmax, label = argmax,
confidence = its probability), not meaningful.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.spec import class_names
from tasks.io.schema import (
    PARTITION_COLUMN,
    PREDICTIONS,
    PREDICTIONS_SCHEMA,
    REJECTIONS,
    REJECTIONS_SCHEMA,
    with_model_metadata,
)
from tasks.io.validate import REASONS


def _timestamps(rng: np.random.Generator, n: int, start: date, days: int) -> np.ndarray:
    base = np.datetime64(datetime.combine(start, datetime.min.time()), "us")
    offsets = rng.integers(0, days * 86_400_000_000, size=n)
    return np.sort(base + offsets.astype("timedelta64[us]"))


def synth_predictions(n: int, start: date, days: int, seed: int = 0, batches: int = 4,
                      model_versions: tuple[str, ...] = ("v0001", "v0002"),
                      class_weights: np.ndarray | None = None) -> pa.Table:
    """``n`` prediction rows spread over ``days`` UTC days from ``start`` (no ``date`` column:
    it is the partition). ``class_weights`` skews the class mix (17 weights)."""
    rng = np.random.default_rng(seed)
    names = class_names()
    k = len(names)
    target = rng.choice(k, size=n, p=None if class_weights is None
                        else np.asarray(class_weights, float) / np.sum(class_weights))
    logits = rng.normal(0.0, 1.0, size=(n, k)).astype(np.float32)
    logits[np.arange(n), target] += rng.uniform(1.0, 7.0, size=n).astype(np.float32)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1)
    top1, top2 = order[:, 0], order[:, 1]
    rows = np.arange(n)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=1)
    ts = _timestamps(rng, n, start, days)
    batch_of = np.minimum((np.arange(n) * batches) // max(n, 1), batches - 1)
    label_arr = np.array(names, dtype=object)
    batch_names = np.array([f"batch_{b:03d}" for b in batch_of], dtype=object)
    frame = rng.integers(0, 3, size=n).astype(np.int32)
    source = [f"{b}/s{s:02d}/t{i:06d}.npy" for b, s, i in
              zip(batch_names, rng.integers(0, 20, size=n), rows, strict=True)]
    flat = pa.array(probs.reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    warn_pick = rng.random(n)
    warnings = [["no_peak"] if w < 0.02 else [] for w in warn_pick]
    versions = np.array(model_versions, dtype=object)[np.minimum(
        (np.arange(n) * len(model_versions)) // max(n, 1), len(model_versions) - 1)]
    columns = {
        "source_path": pa.array(source, pa.string()),
        "batch": pa.array(batch_names, pa.string()),
        "frame_index": pa.array(frame),
        "content_sha256": pa.array([f"{x:064x}" for x in rng.integers(0, 2**62, size=n)]),
        "label": pa.array(label_arr[top1], pa.string()),
        "confidence": pa.array(probs[rows, top1], pa.float32()),
        "probabilities": pa.ListArray.from_arrays(offsets, flat),
        "top2_label": pa.array(label_arr[top2], pa.string()),
        "top2_confidence": pa.array(probs[rows, top2], pa.float32()),
        "entropy": pa.array(entropy.astype(np.float32)),
        "warnings": pa.array(warnings, pa.list_(pa.string())),
        "model_version": pa.array(versions, pa.string()),
        "flow_run_id": pa.array([f"run-{b}" for b in batch_of], pa.string()),
        "classified_at": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "model_sha256": pa.array([f"sha-of-{v}" for v in versions], pa.string()),
        "temperature": pa.array(np.ones(n, np.float32)),
        "posebatch_version": pa.array(["sample"] * n, pa.string()),
        "run_kind": pa.array(["classify"] * n, pa.string()),
    }
    return pa.table(columns, schema=PREDICTIONS_SCHEMA)


def synth_rejections(n: int, start: date, days: int, seed: int = 0) -> pa.Table:
    """``n`` rejection rows with reasons drawn from ``REASONS``."""
    rng = np.random.default_rng(seed)
    reasons = sorted(REASONS)
    picked = [reasons[i] for i in rng.integers(0, len(reasons), size=n)]
    return pa.table({
        "source_path": [f"batch_{i % 3:03d}/bad_{i:05d}.npy" for i in range(n)],
        "content_sha256": [f"{i:064x}" for i in range(n)],
        "reason": picked,
        "detail": [REASONS[r] for r in picked],
        "rejected_at": pa.array(_timestamps(rng, n, start, days), pa.timestamp("us", tz="UTC")),
        "flow_run_id": ["run-x"] * n,
    }, schema=REJECTIONS_SCHEMA)


def day_of(table: pa.Table, column: str) -> np.ndarray:
    """The UTC ``YYYY-MM-DD`` of each row's timestamp (the partition value)."""
    values = table.column(column).to_numpy().astype("datetime64[D]")
    return np.datetime_as_string(values, unit="D")


def write_partitioned(table: pa.Table, output: Path, name: str,
                      rows_per_file: int = 200_000) -> list[Path]:
    """Write ``table`` to ``output/<name>/date=YYYY-MM-DD/part-NNNNN.parquet`` files."""
    ts_col = "classified_at" if name == PREDICTIONS else "rejected_at"
    days = day_of(table, ts_col)
    schema = table.schema
    if name == PREDICTIONS:
        schema = with_model_metadata(schema, class_names(), "v0001")
    written = []
    for day in sorted(set(days.tolist())):
        part = table.filter(pa.array(days == day))
        folder = output / name / f"{PARTITION_COLUMN}={day}"
        folder.mkdir(parents=True, exist_ok=True)
        existing = len(list(folder.glob("part-*.parquet")))
        for j, start in enumerate(range(0, part.num_rows, rows_per_file)):
            path = folder / f"part-{existing + j:05d}.parquet"
            pq.write_table(part.slice(start, rows_per_file).cast(schema), path)
            written.append(path)
    return written


def write_sample_outputs(output: Path, predictions: int, rejections: int, start: date,
                         days: int, seed: int = 0) -> dict[str, int]:
    """A whole output folder (both datasets); returns row counts."""
    write_partitioned(synth_predictions(predictions, start, days, seed), output, PREDICTIONS)
    if rejections:
        write_partitioned(synth_rejections(rejections, start, days, seed + 1), output,
                          REJECTIONS)
    return {"predictions": predictions, "rejections": rejections}


def utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    """A UTC datetime (test convenience)."""
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


__all__ = ["synth_predictions", "synth_rejections", "write_partitioned", "write_sample_outputs",
           "day_of", "utc"]
