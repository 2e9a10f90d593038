"""The Parquet schemas of posebatch's outputs: one definition, used by writers and readers.

``predictions`` and ``rejections`` are hive-partitioned by ``date=YYYY-MM-DD`` (the UTC day
of ``classified_at`` / ``rejected_at``); ``date`` is a partition column, not stored in files.
"""

from __future__ import annotations

import json

import pyarrow as pa

PREDICTIONS = "predictions"
REJECTIONS = "rejections"
PARTITION_COLUMN = "date"

PREDICTIONS_SCHEMA = pa.schema([
    pa.field("source_path", pa.string(), nullable=False),    # relative to input root, POSIX
    pa.field("batch", pa.string(), nullable=False),          # top-level batch folder
    pa.field("frame_index", pa.int32(), nullable=False),
    pa.field("content_sha256", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("confidence", pa.float32(), nullable=False),    # calibrated P(label)
    pa.field("probabilities", pa.list_(pa.float32()), nullable=False),  # model class order
    pa.field("top2_label", pa.string()),
    pa.field("top2_confidence", pa.float32()),
    pa.field("entropy", pa.float32()),
    pa.field("warnings", pa.list_(pa.string())),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("flow_run_id", pa.string()),
    pa.field("classified_at", pa.timestamp("us", tz="UTC"), nullable=False),
    # Lineage: enough to trace and reproduce a row (null in rows written before they
    # existed): the model file's SHA-256, the temperature applied, the posebatch version,
    # and the run kind (``classify``, or ``rescore`` for a row re-scored by a newer model).
    pa.field("model_sha256", pa.string()),
    pa.field("temperature", pa.float32()),
    pa.field("posebatch_version", pa.string()),
    pa.field("run_kind", pa.string()),
])
LINEAGE = ("model_sha256", "temperature", "posebatch_version", "run_kind")

REJECTIONS_SCHEMA = pa.schema([
    pa.field("source_path", pa.string(), nullable=False),
    pa.field("content_sha256", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),         # a code of tasks.io.validate.REASONS
    pa.field("detail", pa.string()),
    pa.field("rejected_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("flow_run_id", pa.string()),
])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order, the missing ones null: parts written
    before a column existed merge with newer ones (compaction, forget)."""
    cols = [table.column(f.name) if f.name in table.schema.names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema.with_metadata(table.schema.metadata or {}))


def with_model_metadata(schema: pa.Schema, class_names: list[str], model_version: str) -> pa.Schema:
    """Attach the model's class order and version to a file's schema metadata."""
    meta = dict(schema.metadata or {})
    meta[b"posebatch.class_names"] = json.dumps(class_names).encode()
    meta[b"posebatch.model_version"] = model_version.encode()
    return schema.with_metadata(meta)
