"""A generated re-scoring history: prediction Parquet written directly in the project's schema.

``v0001`` classifies every frame (days 1-2); ``v0002`` re-scores the first 60 % of them
(day 3) with known flips; ``v0003`` re-scores frames 40 %-80 % (day 4). One frame of the
v0003 set is scored by v0002 and v0003 at the same instant (the tie rule). The rows are also
returned as plain dicts so tests recompute everything in plain Python.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from models.spec import class_names
from tasks.io.schema import PREDICTIONS, PREDICTIONS_SCHEMA
from tasks.synth.sample_outputs import synth_predictions, write_partitioned

START = date(2024, 6, 1)
VERSIONS = ("v0001", "v0002", "v0003")


def _version_rows(base: pa.Table, idx: np.ndarray, version: str, day: int, seed: int,
                  flip_share: float) -> pa.Table:
    """Rows of ``base[idx]`` re-scored by ``version`` on day ``day``: a ``flip_share`` of the
    labels move to another class, confidences redrawn (some high, to be reviewed)."""
    rng = np.random.default_rng(seed)
    names = class_names()
    sub = base.take(pa.array(idx))
    n = sub.num_rows
    labels = sub.column("label").to_pylist()
    flip = rng.random(n) < flip_share
    new_labels = [names[(names.index(lab) + 1 + int(rng.integers(0, 3))) % len(names)]
                  if f else lab for lab, f in zip(labels, flip, strict=True)]
    conf = rng.uniform(0.3, 1.0, size=n).astype(np.float32)
    start = datetime.combine(START, datetime.min.time(), UTC) + timedelta(days=day)
    ts = [start + timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, 80_000, n))]
    cols = {name: sub.column(name) for name in sub.column_names}
    cols.update(label=pa.array(new_labels, pa.string()),
                confidence=pa.array(conf, pa.float32()),
                model_version=pa.array([version] * n, pa.string()),
                classified_at=pa.array(ts, pa.timestamp("us", tz="UTC")))
    return pa.table(cols, schema=PREDICTIONS_SCHEMA)


def write_history(output: Path, frames: int = 600, seed: int = 5) -> list[dict]:
    """Write the history under ``output/predictions`` (one file per version and day, as
    classify and compaction do) and return every row as a dict with its ``date``."""
    base = synth_predictions(frames, START, 2, seed=seed, batches=3, model_versions=("v0001",))
    v2_idx = np.arange(0, int(frames * 0.6))
    v3_idx = np.arange(int(frames * 0.4), int(frames * 0.8))
    v2 = _version_rows(base, v2_idx, "v0002", 2, seed + 1, 0.25)
    v3 = _version_rows(base, v3_idx, "v0003", 3, seed + 2, 0.4)
    # The tie: the last frame of v0002's set is re-scored by v0003 at v0002's very instant.
    tie = int(frames * 0.6) - 1
    at = v2.column("classified_at")[len(v2_idx) - 1]
    ts = v3.column("classified_at").to_pylist()
    ts[int(np.where(v3_idx == tie)[0][0])] = at.as_py()
    order = np.argsort(np.array([t.timestamp() for t in ts]), kind="stable")
    v3 = v3.set_column(v3.schema.get_field_index("classified_at"), "classified_at",
                       pa.array(ts, pa.timestamp("us", tz="UTC"))).take(pa.array(order))
    rows = []
    for table in (base, v2, v3):
        write_partitioned(table, output, PREDICTIONS, rows_per_file=10_000)
        for r in table.to_pylist():
            r["date"] = r["classified_at"].date()
            rows.append(r)
    return rows


def frame_key(row: dict) -> tuple[str, str, int]:
    return row["source_path"], row["content_sha256"], row["frame_index"]


def expected_pick(rows: list[dict], production: str | None) -> dict[tuple, dict]:
    """The documented rule in plain Python: per frame, production's row, else the latest
    classified_at, a tie to the larger version."""
    best: dict[tuple, dict] = {}
    for r in rows:
        k = frame_key(r)
        rank = (r["model_version"] == production, r["classified_at"], r["model_version"])
        if k not in best or rank > best[k][0]:
            best[k] = (rank, r)
    return {k: v[1] for k, v in best.items()}
