"""Label feedback: true labels for frames already classified, and the accuracy they realize.

Why: the label-free estimate (``estimate.py``) is only as good as the model's calibration.
When someone labels a sample of what was classified, the realized accuracy and macro-F1 of
those frames can stand next to the estimate, run by run, and show whether it can be trusted.

A labels CSV (``source_path[,frame_index],label``; the generator's ``incoming_labels.csv``
has no ``frame_index``: such a row labels every frame of the file) is joined with the
predictions on ``source_path`` (+ ``frame_index``). Matched rows are written to
``OUTPUT/monitoring/feedback/<digest>.parquet``, the name a digest of the matched rows, so
the same CSV twice writes the same file once; a frame labeled again in another CSV counts
once, with its latest label (``read_feedback``). Pure pyarrow and NumPy, no Prefect.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FEEDBACK_DIR = "monitoring/feedback"     # under the classification output root
KEY = ("source_path", "frame_index", "content_sha256")
FEEDBACK_SCHEMA = pa.schema([
    pa.field("source_path", pa.string(), nullable=False),
    pa.field("frame_index", pa.int32(), nullable=False),
    pa.field("content_sha256", pa.string(), nullable=False),
    pa.field("true_label", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),          # what the model predicted
    pa.field("confidence", pa.float32()),
    pa.field("model_version", pa.string()),
    pa.field("flow_run_id", pa.string()),
    pa.field("classified_at", pa.timestamp("us", tz="UTC")),
    pa.field("recorded_at", pa.timestamp("us", tz="UTC"), nullable=False),
])
PREDICTION_COLUMNS = ["source_path", "frame_index", "content_sha256", "label", "confidence",
                      "model_version", "flow_run_id", "classified_at"]


class FeedbackError(ValueError):
    """A labels file that cannot be read (one line)."""


def parse_labels(text: str) -> pa.Table:
    """``source_path, frame_index (null: every frame), label`` from the CSV's text. The
    header must name ``source_path`` and ``label``; ``frame_index`` is optional."""
    reader = csv.DictReader(io.StringIO(text))
    fields = set(reader.fieldnames or ())
    if not {"source_path", "label"} <= fields:
        raise FeedbackError("the labels CSV needs a header with source_path and label "
                            "(and optionally frame_index)")
    paths, frames, labels = [], [], []
    for n, row in enumerate(reader, start=2):
        frame = (row.get("frame_index") or "").strip()
        if frame and not frame.isdigit():
            raise FeedbackError(f"line {n}: frame_index {frame!r} is not a whole number")
        paths.append((row["source_path"] or "").strip().replace("\\", "/"))
        frames.append(int(frame) if frame else None)
        labels.append((row["label"] or "").strip())
    return pa.table({"source_path": pa.array(paths, pa.string()),
                     "frame_index": pa.array(frames, pa.int32()),
                     "true_label": pa.array(labels, pa.string())})


def match_labels(labels: pa.Table, predictions: pa.Table, class_names: Sequence[str],
                 recorded_at: datetime | None = None) -> dict[str, Any]:
    """Join labels with predictions. Returns ``matched`` (a ``FEEDBACK_SCHEMA`` table),
    ``rejected`` (rows whose label is no class: ``{source_path, label}``, first 20),
    ``rejected_rows``, ``unmatched_rows`` (labels of frames never classified; ``unmatched``
    names the first 20 paths, ``first_unmatched`` the first row's, or None) and
    ``changed_rows`` / ``changed``.

    A labels table with a ``content_sha256`` column (``label import``: the content the
    person saw) matches only the predictions of that content; a row whose path and frame
    were classified, but never with that content (the file was rewritten since), counts
    as ``changed`` and labels nothing."""
    known = pa.array(list(class_names), pa.string())
    ok = pc.is_in(labels["true_label"], value_set=known)
    bad = labels.filter(pc.invert(ok))
    good = labels.filter(ok)
    good = good.append_column("_row", pa.array(range(good.num_rows), pa.int64()))
    preds = predictions.select(PREDICTION_COLUMNS)
    framed = good.filter(pc.is_valid(good["frame_index"]))
    keys = ["source_path", "frame_index"]
    if "content_sha256" in good.column_names:
        keys.append("content_sha256")
    exact = framed.join(preds, keys, join_type="inner")
    whole = good.filter(pc.is_null(good["frame_index"])).select(
        ["source_path", "true_label", "_row"]).join(preds, ["source_path"], join_type="inner")
    joined = pa.concat_tables([exact.select(whole.column_names), whole])
    when = recorded_at or datetime.now(UTC)
    joined = joined.append_column("recorded_at", pa.array([when] * joined.num_rows,
                                                          pa.timestamp("us", tz="UTC")))
    matched_rows = set(joined["_row"].to_pylist())
    missed = good.filter(pc.invert(pc.is_in(good["_row"], pa.array(sorted(matched_rows),
                                                                      pa.int64()))))
    framing = ["source_path", "frame_index"]
    changed = missed.filter(pc.is_valid(missed["frame_index"])).select(framing).join(
        preds.select(framing), framing, join_type="left semi")
    changed_paths = sorted(set(changed["source_path"].to_pylist()))
    gone = set(changed_paths)
    in_order = [p for p in missed["source_path"].to_pylist() if p not in gone]
    unmatched = sorted(set(in_order))
    return {"matched": joined.select(FEEDBACK_SCHEMA.names).cast(FEEDBACK_SCHEMA),
            "rejected": bad.select(["source_path", "true_label"]).slice(0, 20).to_pylist(),
            "rejected_rows": bad.num_rows,
            "unmatched_rows": missed.num_rows - changed.num_rows, "unmatched": unmatched[:20],
            "first_unmatched": in_order[0] if in_order else None,
            "changed_rows": changed.num_rows, "changed": changed_paths[:20]}


def feedback_digest(matched: pa.Table) -> str:
    """A name for the matched rows that is the same for the same rows in any order."""
    keys = sorted(zip(*(matched[c].to_pylist() for c in (*KEY, "true_label")), strict=True))
    return hashlib.sha256(repr(keys).encode()).hexdigest()[:24]


def record_feedback(output_dir: str, matched: pa.Table) -> tuple[str, bool]:
    """Write the matched rows once (atomically, local or ``s3://``). Returns the file's
    path and whether it was new (False: this exact feedback was recorded before)."""
    from tasks.io.storage import Location

    loc = Location(output_dir)
    rel = f"{FEEDBACK_DIR}/{feedback_digest(matched)}.parquet"
    if loc.exists(rel):
        return loc.uri_of(rel), False
    buf = io.BytesIO()
    pq.write_table(matched, buf, compression="zstd")
    loc.write_bytes(rel, buf.getvalue())
    return loc.uri_of(rel), True


def read_feedback(output_dir: str) -> pa.Table:
    """Every recorded label, one row per frame (``KEY``): the latest ``recorded_at`` wins."""
    from tasks.io.storage import Location

    loc = Location(output_dir)
    if not loc.exists(FEEDBACK_DIR):
        return FEEDBACK_SCHEMA.empty_table()
    files = Location(loc.uri_of(FEEDBACK_DIR)).list_files(".parquet")
    tables = [pq.read_table(io.BytesIO(loc.read_bytes(f"{FEEDBACK_DIR}/{f.path}")))
              for f in files]
    if not tables:
        return FEEDBACK_SCHEMA.empty_table()
    table = pa.concat_tables([t.cast(FEEDBACK_SCHEMA) for t in tables])
    table = table.sort_by([("recorded_at", "descending")])
    seen, keep = set(), []
    for i, key in enumerate(zip(*(table[c].to_pylist() for c in KEY), strict=True)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64()))


def realized(true: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 (over the classes seen in either column) of labeled frames."""
    t, p = np.asarray(true, object), np.asarray(predicted, object)
    if not len(t):
        return {"labeled_frames": 0, "accuracy": None, "macro_f1": None}
    f1s = []
    for c in sorted(set(t) | set(p)):
        tp = float(np.sum((t == c) & (p == c)))
        denom = float(np.sum(t == c) + np.sum(p == c))
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"labeled_frames": int(len(t)), "accuracy": float(np.mean(t == p)),
            "macro_f1": float(np.mean(f1s))}


def realized_by_run(feedback: pa.Table) -> dict[str, dict[str, Any]]:
    """``realized`` per ``flow_run_id`` (the run that classified the frames)."""
    runs: dict[str, tuple[list[str], list[str]]] = {}
    for run, t, p in zip(feedback["flow_run_id"].to_pylist(),
                         feedback["true_label"].to_pylist(), feedback["label"].to_pylist(),
                         strict=True):
        a, b = runs.setdefault(str(run), ([], []))
        a.append(t)
        b.append(p)
    return {run: realized(t, p) for run, (t, p) in runs.items()}


def with_realized(runs: pa.Table, feedback: pa.Table) -> pa.Table:
    """The run history with ``labeled_frames``, ``accuracy`` and ``macro_f1`` columns
    (null for runs nobody labeled), beside each run's ``est_accuracy`` / ``est_macro_f1``."""
    by_run = realized_by_run(feedback)
    ids = runs["flow_run_id"].to_pylist()
    cols = {"labeled_frames": pa.int64(), "accuracy": pa.float64(), "macro_f1": pa.float64()}
    for name, typ in cols.items():
        values = [by_run.get(i, {}).get(name) for i in ids]
        runs = runs.append_column(name, pa.array(values, typ))
    return runs
