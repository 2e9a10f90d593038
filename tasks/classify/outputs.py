"""The Parquet outputs: prediction and rejection rows, their parts, and compaction.

Rows follow ``tasks/io/schema.py`` (the one definition). A chunk's rows become one part per
dataset, written to staging and committed through the ledger (``tasks/classify/ledger/``), so a
reader never sees a half-written or uncommitted file. Parts land in hive partitions
``OUTPUT/<dataset>/date=YYYY-MM-DD/part-<time>-<commit>.parquet`` (UTC day of the commit).

Compaction merges the parts of a day into one file per model version through the same
commit record (new part in, old parts out), so many small runs do not leave thousands of
tiny files. It holds the output lock; a reader listing files during the instant between the
new part's rename and the old parts' deletion can see both, so run it while nobody queries.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from models.registry import ModelEntry
from tasks.classify.discover import batch_of
from tasks.classify.infer import ChunkResult
from tasks.classify.ledger import (
    CommitRecord,
    Ledger,
    Part,
    new_commit_id,
    staging_dir,
    write_durable,
)
from tasks.io.faults import crash_point
from tasks.io.schema import (
    LINEAGE,
    PARTITION_COLUMN,
    PREDICTIONS,
    PREDICTIONS_SCHEMA,
    REJECTIONS,
    REJECTIONS_SCHEMA,
    conform,
    with_model_metadata,
)
from tasks.io.storage import Location

COMPRESSION = "zstd"
SCORED = ("classified", "rescored")   # statuses whose files have prediction rows


@dataclass
class Judged:
    """A chunk with each file's outcome decided against the ledger (see ``judge_chunk``)."""

    result: ChunkResult
    status: list[str | None]        # classified/rejected/duplicate/unchanged; None: skipped
    detail: list[str | None]

    def entries(self, sizes: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
        """Ledger entries: one per recorded file (skipped files are not recorded)."""
        out = []
        for f, st, det in zip(self.result.files, self.status, self.detail, strict=True):
            if st is None:
                continue
            size, mtime_ns = sizes.get(f.path, (0, 0))
            out.append({"path": f.path, "sha256": f.sha256, "size": size,
                        "mtime_ns": mtime_ns, "status": st,
                        "reason": f.reason if st == "rejected" else None,
                        "detail": det if st == "duplicate" else f.detail,
                        "frames": f.frames if st in SCORED else 0})
        return out


def judge_chunk(result: ChunkResult, ledger: Ledger) -> Judged:
    """Decide each file's fate: new content is classified or rejected; content the ledger
    already holds is ``unchanged`` (same path) or ``duplicate`` (another path: a renamed or
    copied file is recognised, not classified twice); skipped files are left for later."""
    present = [f for f in result.files if not f.skipped]
    verdicts = iter(ledger.judge([(f.path, str(f.sha256)) for f in present]))
    status: list[str | None] = []
    detail: list[str | None] = []
    for f in result.files:
        if f.skipped:
            status.append(None)
            detail.append(None)
            continue
        known, original = next(verdicts)
        status.append(known or ("rejected" if f.reason else "classified"))
        detail.append(original)
    return Judged(result, status, detail)


def lineage(entry: ModelEntry, run_kind: str = "classify") -> dict[str, Any]:
    """The lineage columns (``schema.LINEAGE``) of the rows a model version writes in a run."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("posebatch")
    except PackageNotFoundError:  # run from a source tree without installing
        ours = None
    return {"model_sha256": entry.model_sha256(), "temperature": entry.temperature,
            "posebatch_version": ours, "run_kind": run_kind}


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
    return (-(p * logs).sum(axis=1)).astype(np.float32)


def predictions_table(judged: Judged, classified_at: datetime, flow_run_id: str | None,
                      lineage: dict[str, Any] | None = None) -> pa.Table:
    """One row per frame of the files judged ``classified`` or ``rescored``
    (``PREDICTIONS_SCHEMA``); ``lineage``: the values of ``schema.LINEAGE`` for every row."""
    res = judged.result
    keep_file = np.array([s in SCORED for s in judged.status] or [False], bool)
    mask = keep_file[res.file_index] if len(res.file_index) else np.zeros(0, bool)
    probs = res.probabilities[mask]
    fidx = res.file_index[mask]
    frames = res.frame_index[mask]
    names = np.array(res.class_names, dtype=object)
    n, c = probs.shape if probs.ndim == 2 else (0, len(names))
    if n:
        order = np.argsort(-probs, axis=1, kind="stable")[:, :2]
        top1, top2 = order[:, 0], order[:, 1] if c > 1 else order[:, 0]
    else:
        top1 = top2 = np.zeros(0, np.int64)
    rows = np.arange(n)
    files = res.files
    paths = [files[i].path for i in fidx]
    warnings = [files[i].warnings[f] if f < len(files[i].warnings) else []
                for i, f in zip(fidx.tolist(), frames.tolist(), strict=True)]
    schema = with_model_metadata(PREDICTIONS_SCHEMA, res.class_names, res.model_version)
    offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32))
    return pa.table({
        "source_path": pa.array(paths, pa.string()),
        "batch": pa.array([batch_of(p) for p in paths], pa.string()),
        "frame_index": pa.array(frames.astype(np.int32)),
        "content_sha256": pa.array([files[i].sha256 for i in fidx], pa.string()),
        "label": pa.array(names[top1].tolist() if n else [], pa.string()),
        "confidence": pa.array(probs[rows, top1].astype(np.float32)),
        "probabilities": pa.ListArray.from_arrays(
            offsets, pa.array(probs.astype(np.float32).ravel())),
        "top2_label": pa.array(names[top2].tolist() if n else [], pa.string()),
        "top2_confidence": pa.array(probs[rows, top2].astype(np.float32)),
        "entropy": pa.array(_entropy(probs) if n else np.zeros(0, np.float32)),
        "warnings": pa.array(warnings, pa.list_(pa.string())),
        "model_version": pa.array([res.model_version] * n, pa.string()),
        "flow_run_id": pa.array([flow_run_id] * n, pa.string()),
        "classified_at": pa.array([classified_at] * n, pa.timestamp("us", tz="UTC")),
        **{k: pa.array([(lineage or {}).get(k)] * n, PREDICTIONS_SCHEMA.field(k).type)
           for k in LINEAGE},
    }, schema=schema)


def rejections_table(judged: Judged, rejected_at: datetime, flow_run_id: str | None) -> pa.Table:
    """One row per file judged ``rejected`` (``REJECTIONS_SCHEMA``)."""
    rej = [f for f, s in zip(judged.result.files, judged.status, strict=True) if s == "rejected"]
    return pa.table({
        "source_path": pa.array([f.path for f in rej], pa.string()),
        "content_sha256": pa.array([f.sha256 for f in rej], pa.string()),
        "reason": pa.array([f.reason for f in rej], pa.string()),
        "detail": pa.array([f.detail for f in rej], pa.string()),
        "rejected_at": pa.array([rejected_at] * len(rej), pa.timestamp("us", tz="UTC")),
        "flow_run_id": pa.array([flow_run_id] * len(rej), pa.string()),
    }, schema=REJECTIONS_SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=COMPRESSION)
    return buf.getvalue()


def day(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def part_path(dataset: str, at: datetime, commit_id: str) -> str:
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{dataset}/{PARTITION_COLUMN}={day(at)}/part-{stamp}-{commit_id}.parquet"


def stage_tables(loc: Location, commit_id: str, at: datetime,
                 tables: dict[str, pa.Table]) -> list[Part]:
    """Write non-empty tables to the commit's staging folder; return where each goes."""
    parts = []
    for dataset, table in tables.items():
        if table.num_rows == 0:
            continue
        staged = f"{staging_dir(commit_id)}/{dataset}.parquet"
        write_durable(loc, staged, parquet_bytes(table))
        parts.append(Part(staged=staged, final=part_path(dataset, at, commit_id)))
    return parts


def commit_chunk(ledger: Ledger, judged: Judged, sizes: dict[str, tuple[int, int]],
                 commit_id: str, flow_run_id: str | None, at: datetime | None = None,
                 lineage: dict[str, Any] | None = None
                 ) -> tuple[CommitRecord, dict[str, pa.Table]]:
    """Stage the chunk's parts and commit them with its ledger entries (exactly once).
    ``lineage["run_kind"]`` (default ``classify``) is also the commit record's kind."""
    existing = ledger.record_for(commit_id)
    if existing is not None:  # a retried commit: only finish it
        return ledger.commit(existing), {}
    at = at or datetime.now(UTC)
    kind = (lineage or {}).get("run_kind") or "classify"
    tables = {PREDICTIONS: predictions_table(judged, at, flow_run_id, lineage),
              REJECTIONS: rejections_table(judged, at, flow_run_id)}
    parts = stage_tables(ledger.loc, commit_id, at, tables)
    record = CommitRecord(seq=0, commit_id=commit_id, kind=kind,
                          created_at=at.isoformat(), flow_run_id=flow_run_id,
                          model_version=judged.result.model_version,
                          entries=judged.entries(sizes), parts=parts)
    return ledger.commit(record), tables


# -- compaction -------------------------------------------------------------------------------
def list_parts(loc: Location, dataset: str) -> dict[str, list[str]]:
    """Committed part files of a dataset by partition folder (``date=...``), sorted."""
    sel = pafs.FileSelector(loc.path(dataset), recursive=True, allow_not_found=True)
    prefix = loc.path("").rstrip("/") + "/"
    out: dict[str, list[str]] = {}
    for info in loc.fs.get_file_info(sel):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        if info.base_name.startswith((".", "_")):
            continue
        rel = info.path[len(prefix):]
        out.setdefault(rel.rsplit("/", 1)[0], []).append(rel)
    return {k: sorted(v) for k, v in sorted(out.items())}


def _version_of(table: pa.Table) -> str:
    meta = table.schema.metadata or {}
    return meta.get(b"posebatch.model_version", b"").decode()


def compact(ledger: Ledger, datasets: Sequence[str] = (PREDICTIONS, REJECTIONS),
            min_parts: int = 2, flow_run_id: str | None = None) -> dict[str, int]:
    """Merge each partition holding at least ``min_parts`` parts into one part per model
    version, committed through the ledger; the record's ``moves`` point the ledger entries of
    the old parts at the new one. Call it holding the output lock, after
    ``reconcile`` and ``fold`` (so no unfinished commit still points at a part)."""
    loc = ledger.loc
    stats = {"partitions": 0, "parts_before": 0, "parts_after": 0, "rows": 0}
    for dataset in datasets:
        for folder, parts in list_parts(loc, dataset).items():
            if len(parts) < max(2, min_parts):
                continue
            groups: dict[str, list[pa.Table]] = {}
            versions: dict[str, list[str]] = {}   # which old parts each new part replaces
            for rel in parts:
                table = pq.read_table(loc.path(rel), filesystem=loc.fs, partitioning=None)
                groups.setdefault(_version_of(table), []).append(table)
                versions.setdefault(_version_of(table), []).append(rel)
            commit_id = new_commit_id()
            at = datetime.now(UTC)
            stamp = at.strftime("%Y%m%dT%H%M%S")
            new_parts, moves = [], {}
            for k, (version, tables) in enumerate(sorted(groups.items())):
                schema = (PREDICTIONS_SCHEMA if dataset == PREDICTIONS else REJECTIONS_SCHEMA
                          ).with_metadata(tables[0].schema.metadata or {})
                merged = pa.concat_tables([conform(t, schema) for t in tables])
                staged = f"{staging_dir(commit_id)}/{dataset}-{k}.parquet"
                write_durable(loc, staged, parquet_bytes(merged))
                new_parts.append(Part(staged, f"{folder}/part-{stamp}-{commit_id}-c{k}.parquet"))
                moves.update({rel: new_parts[-1].final for rel in versions[version]})
                stats["rows"] += merged.num_rows
            crash_point("compact:staged")
            ledger.commit(CommitRecord(seq=0, commit_id=commit_id, kind="compact",
                                       created_at=at.isoformat(), flow_run_id=flow_run_id,
                                       parts=new_parts, removes=parts, moves=moves))
            stats["partitions"] += 1
            stats["parts_before"] += len(parts)
            stats["parts_after"] += len(new_parts)
    return stats


def crowded_partitions(loc: Location, threshold: int,
                       datasets: Sequence[str] = (PREDICTIONS, REJECTIONS)) -> int:
    """How many partitions hold more than ``threshold`` parts (auto-compaction trigger)."""
    return sum(1 for d in datasets for parts in list_parts(loc, d).values()
               if len(parts) > threshold)
