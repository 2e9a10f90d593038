"""Workers that write their own parts: the flow commits metadata only.

On Dask, shipping every row back to the flow process made that one process the cost per
file (it pickled, judged, built and wrote every Parquet part). Here, like Spark's output
committers, the worker that classified a chunk also writes the chunk's Parquet parts into
the output's staging folder (``_posebatch/staging/<commit id>/``, local or ``s3://``) and
returns a ``StagedChunk``: per file its identity and outcome (what the ledger records), the
staged parts with their row counts and sizes, and the chunk's statistics (label and warning
counts, the monitoring accumulator, the three slim columns the run report keeps). No
probabilities, no per-frame rows.

The flow then judges the files against the ledger and commits the staged parts through one
commit record, exactly once as before. The worker assumes every file it read is new; when
the ledger knows some of them (a copy under another path, a file whose time stamp alone
changed), the flow rewrites the staged parts without their rows before committing (rare:
discovery already left out what the ledger holds). A chunk never committed (the flow died,
Dask re-ran it elsewhere) leaves a staging folder without a record, which ``reconcile``
deletes as it always did. The threaded path keeps writing in the flow's process: there the
rows never cross a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.classify.infer import ChunkResult, FileOutcome
from tasks.classify.ledger import CommitRecord, Ledger, Part, write_durable
from tasks.classify.outputs import (
    Judged,
    judge_chunk,
    parquet_bytes,
    predictions_table,
    rejections_table,
    stage_tables,
)
from tasks.classify.tally import preds_summary
from tasks.io.schema import PREDICTIONS, REJECTIONS
from tasks.io.storage import Location
from tasks.monitor.inputs import InputStats
from tasks.monitor.predictions import PredictionStats


@dataclass
class StagedChunk:
    """What a worker hands back after staging a chunk's parts: no rows."""

    commit_id: str
    output_dir: str
    outcomes: pa.Table                   # per file: path, sha256, frames, reason, detail...
    model_version: str
    class_names: list[str]
    parts: list[Part]
    rows: dict[str, int]                 # dataset -> rows staged
    bytes: dict[str, int]                # dataset -> bytes staged
    summary: dict[str, Any]              # tally.preds_summary: counts and accumulators
    at: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    input_stats: InputStats = field(default_factory=InputStats)
    batches: int = 0

    @property
    def files(self) -> list[FileOutcome]:
        """The file outcomes (columns on the wire: unpickling 2,048 objects per chunk cost
        the flow more than committing them)."""
        return [FileOutcome(**row) for row in self.outcomes.to_pylist()]


def _assumed(result: ChunkResult) -> Judged:
    """Every file read is new: classified, or rejected with its reason."""
    status = [None if f.skipped else ("rejected" if f.reason else "classified")
              for f in result.files]
    return Judged(result, status, [None] * len(result.files))


def stage_chunk(output_dir: str, commit_id: str, result: ChunkResult, flow_run_id: str | None,
                lineage: dict[str, Any] | None, low_confidence: float) -> StagedChunk:
    """On the worker: write the chunk's parts into staging; return everything but rows."""
    at = datetime.now(UTC)
    judged = _assumed(result)
    tables = {PREDICTIONS: predictions_table(judged, at, flow_run_id, lineage),
              REJECTIONS: rejections_table(judged, at, flow_run_id)}
    loc = Location(output_dir)
    parts = stage_tables(loc, commit_id, at, tables)
    stats = PredictionStats(result.class_names, low_confidence)
    return StagedChunk(
        commit_id=commit_id, output_dir=output_dir, outcomes=_outcomes(result.files),
        model_version=result.model_version, class_names=result.class_names, parts=parts,
        rows={k: t.num_rows for k, t in tables.items() if t.num_rows},
        bytes={p.staged: loc.fs.get_file_info(loc.path(p.staged)).size for p in parts},
        summary=preds_summary(tables[PREDICTIONS], stats), at=at.isoformat(),
        seconds=result.seconds, input_stats=result.input_stats, batches=result.batches)


def _outcomes(files: list[FileOutcome]) -> pa.Table:
    """The file outcomes as columns, without the per-frame warnings (they are in the parts)."""
    return pa.table({
        "path": pa.array([f.path for f in files], pa.string()),
        "sha256": pa.array([f.sha256 for f in files], pa.string()),
        "frames": pa.array([f.frames for f in files], pa.int32()),
        "reason": pa.array([f.reason for f in files], pa.string()),
        "detail": pa.array([f.detail for f in files], pa.string()),
        "skipped": pa.array([f.skipped for f in files], pa.string()),
    })


def _judge(staged: StagedChunk, files: list[FileOutcome], ledger: Ledger) -> Judged:
    import numpy as np

    shell = ChunkResult(files, np.zeros(0, np.int32), np.zeros(0, np.int32),
                        np.zeros((0, len(staged.class_names)), np.float32),
                        staged.class_names, staged.model_version)
    return judge_chunk(shell, ledger)


def _restage(ledger: Ledger, staged: StagedChunk, files: list[FileOutcome], judged: Judged,
             low_confidence: float) -> dict[str, Any]:
    """Drop the rows of files the ledger already holds from the staged parts (rare)."""
    keep = {"predictions": [f.path for f, s in zip(files, judged.status, strict=True)
                            if s == "classified"],
            "rejections": [f.path for f, s in zip(files, judged.status, strict=True)
                           if s == "rejected"]}
    loc, preds, parts = ledger.loc, None, []
    for part in staged.parts:
        dataset = part.staged.rsplit("/", 1)[-1].removesuffix(".parquet")
        table = pq.read_table(loc.path(part.staged), filesystem=loc.fs)
        table = table.filter(pc.is_in(table.column("source_path"),
                                      pa.array(keep[dataset], pa.string())))
        if table.num_rows:
            write_durable(loc, part.staged, parquet_bytes(table))
            parts.append(part)
        else:
            loc.delete(part.staged)
        if dataset == PREDICTIONS:
            preds = table
    staged.parts = parts
    return preds_summary(preds, PredictionStats(staged.class_names, low_confidence))


def commit_staged(ledger: Ledger, staged: StagedChunk, sizes: dict[str, tuple[int, int]],
                  flow_run_id: str | None, low_confidence: float
                  ) -> tuple[CommitRecord, Judged, dict[str, Any]]:
    """In the flow: judge the files, commit the worker's parts with their ledger entries
    (one record, exactly once); returns the record, the verdicts and the chunk's summary."""
    files = staged.files
    judged = _judge(staged, files, ledger)
    existing = ledger.record_for(staged.commit_id)
    if existing is not None:  # a retried commit: only finish it
        return ledger.commit(existing), judged, staged.summary
    summary = staged.summary
    if judged.status != _assumed_status(files):
        summary = _restage(ledger, staged, files, judged, low_confidence)
    record = CommitRecord(seq=0, commit_id=staged.commit_id, kind="classify",
                          created_at=staged.at, flow_run_id=flow_run_id,
                          model_version=staged.model_version,
                          entries=judged.entries(sizes), parts=staged.parts)
    return ledger.commit(record), judged, summary


def _assumed_status(files: list[FileOutcome]) -> list[str | None]:
    return [None if f.skipped else ("rejected" if f.reason else "classified") for f in files]
