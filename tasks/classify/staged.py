"""Workers that write their own parts: the flow commits metadata only.

On Dask, shipping every row back to the flow process made that one process the cost per
file (it pickled, judged, built and wrote every Parquet part). Here, like Spark's output
committers, the worker that classified a chunk also writes the chunk's Parquet parts into
the output's staging folder (``_posebatch/staging/<commit id>/``, local or ``s3://``) and
returns a ``StagedChunk``: per file its identity and outcome (what the ledger records), the
staged parts with their row counts and sizes, and the chunk's statistics (label and warning
counts, the monitoring accumulator, the three slim columns the run report keeps). No
probabilities, no per-frame rows.

The worker assumes every file it read is new, and also writes the chunk's ledger entries
as one Parquet object (``_posebatch/ledger/chunks/<commit id>.parquet``, record format 3).
The flow checks that assumption with one vectorised scan of the ledger (no content hash of
the chunk known, none twice in it) and commits a record that names the entries object and
its row count: no per-file work in the flow process, which is what lets one flow keep up
with many workers. Chunks that are ready together are committed together
(``commit_staged_group``): one record file names all their entries objects, one write (one
PUT on ``s3://``) for all, so the flow's one request a commit is shared by every chunk
that finished while it committed the last ones. When the ledger knows some files (a copy
under another path, a file whose time stamp alone changed: rare, discovery already left out
what the ledger holds),
the flow judges file by file, rewrites the staged parts without their rows and commits the
entries inline, as before. A chunk never committed (the flow died, Dask re-ran it
elsewhere) leaves a staging folder and an entries object that no record names, which
``reconcile`` deletes. The threaded path keeps writing in the flow's process: there the
rows never cross a process boundary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.classify.infer import ChunkResult, FileOutcome
from tasks.classify.ledger import CommitRecord, Ledger, Part, write_durable
from tasks.classify.ledger.records import CHUNK_COLUMNS, ENTRY_SCHEMA, ROWS_IN, chunks_file
from tasks.classify.outputs import (
    Judged,
    judge_chunk,
    parquet_bytes,
    predictions_table,
    rejections_table,
    stage_tables,
)
from tasks.classify.tally import chunk_stats, preds_summary
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
    entries: pa.Table | None = None      # the entries object's rows but path and sha256
    entries_file: str | None = None      # where the worker wrote them; None: no file recorded

    @property
    def files(self) -> list[FileOutcome]:
        """The file outcomes (columns on the wire: unpickling 2,048 objects per chunk cost
        the flow more than committing them)."""
        return [FileOutcome(**row) for row in self.outcomes.to_pylist()]


def _assumed(result: ChunkResult) -> Judged:
    """Every file read is new: classified, or rejected with its reason."""
    return Judged(result, _assumed_status(result.files), [None] * len(result.files))


def _assumed_status(files: list[FileOutcome]) -> list[str | None]:
    return [None if f.skipped else ("rejected" if f.reason else "classified") for f in files]


def stage_chunk(output_dir: str, commit_id: str, result: ChunkResult, flow_run_id: str | None,
                lineage: dict[str, Any] | None, low_confidence: float,
                sizes: dict[str, tuple[int, int]] | None = None) -> StagedChunk:
    """On the worker: write the chunk's parts into staging and its ledger entries (``sizes``:
    path -> size and mtime_ns, from discovery) as an entries object; return all but rows."""
    at = datetime.now(UTC)
    judged = _assumed(result)
    tables = {PREDICTIONS: predictions_table(judged, at, flow_run_id, lineage),
              REJECTIONS: rejections_table(judged, at, flow_run_id)}
    loc = Location(output_dir)
    parts = stage_tables(loc, commit_id, at, tables)
    entries = _entries(judged, sizes or {}, parts)
    entries_file = None
    if entries.num_rows:
        entries_file = chunks_file(commit_id)
        write_durable(loc, entries_file, parquet_bytes(entries))
    stats = PredictionStats(result.class_names, low_confidence)
    return StagedChunk(
        commit_id=commit_id, output_dir=output_dir, outcomes=_outcomes(result.files),
        model_version=result.model_version, class_names=result.class_names, parts=parts,
        rows={k: t.num_rows for k, t in tables.items() if t.num_rows},
        bytes={p.staged: loc.fs.get_file_info(loc.path(p.staged)).size for p in parts},
        summary=preds_summary(tables[PREDICTIONS], stats), at=at.isoformat(),
        seconds=result.seconds, input_stats=result.input_stats, batches=result.batches,
        entries=_slim(entries), entries_file=entries_file)


def _slim(entries: pa.Table) -> pa.Table:
    """The entries without what ``outcomes`` already carries (path and sha256: the bulk of
    the bytes), status and part dictionary-encoded: what crosses to the flow."""
    slim = entries.drop_columns(["path", "sha256"])
    for name in ("status", "part"):
        i = slim.schema.get_field_index(name)
        slim = slim.set_column(i, name, pc.dictionary_encode(slim.column(name)))
    return slim


def chunk_entries(staged: StagedChunk) -> pa.Table:
    """The rows of the worker's entries object, rebuilt in the flow from the wire: recorded
    files are the ones not skipped, in order."""
    assert staged.entries is not None
    recorded = staged.outcomes.filter(pc.is_null(staged.outcomes["skipped"]))
    cols = {"path": recorded["path"], "sha256": recorded["sha256"],
            **{n: staged.entries[n] for n in staged.entries.column_names}}
    schema = pa.schema([ENTRY_SCHEMA.field(n) for n in CHUNK_COLUMNS])
    return pa.table({n: cols[n] for n in CHUNK_COLUMNS}).cast(schema)


def _entries(judged: Judged, sizes: dict[str, tuple[int, int]], parts: list[Part]) -> pa.Table:
    """The chunk's ledger entries as the columns of an entries object (``CHUNK_COLUMNS``),
    each file pointing at the part that holds its rows."""
    rows = judged.entries(sizes)
    finals = {p.final.split("/", 1)[0]: p.final for p in parts}
    cols = {name: [r[name] for r in rows] for name in CHUNK_COLUMNS if name != "part"}
    cols["part"] = [finals.get(ROWS_IN.get(r["status"], "")) for r in rows]
    return pa.table(cols, schema=pa.schema([ENTRY_SCHEMA.field(n) for n in CHUNK_COLUMNS]))


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


def _all_new(ledger: Ledger, staged: StagedChunk, pending: pa.Array | None = None) -> bool:
    """The worker's assumption holds: no content of the chunk is in the ledger, twice in
    the chunk or in ``pending`` (the hashes of chunks about to be committed with it) (one
    vectorised scan; a known identity implies known content)."""
    if staged.entries is None or not staged.entries_file:
        return False
    shas = _shas(staged)
    if pc.count_distinct(shas).as_py() != len(shas):
        return False
    if pending is not None and len(pending) and pc.any(pc.is_in(shas, value_set=pending)).as_py():
        return False
    e = ledger.entries
    return e.num_rows == 0 or not pc.any(pc.is_in(e["sha256"], value_set=shas)).as_py()


def _shas(staged: StagedChunk) -> pa.ChunkedArray:
    return staged.outcomes.filter(pc.is_null(staged.outcomes["skipped"])).column("sha256")


def _named(staged: StagedChunk, flow_run_id: str | None) -> CommitRecord:
    """The record of an all-new chunk: it names the worker's entries object."""
    assert staged.entries is not None
    return CommitRecord(seq=0, commit_id=staged.commit_id, kind="classify",
                        created_at=staged.at, flow_run_id=flow_run_id,
                        model_version=staged.model_version, parts=staged.parts,
                        entries_file=staged.entries_file, entries_rows=staged.entries.num_rows)


def commit_staged(ledger: Ledger, staged: StagedChunk, sizes: dict[str, tuple[int, int]],
                  flow_run_id: str | None, low_confidence: float
                  ) -> tuple[CommitRecord, dict[str, Any]]:
    """In the flow: commit the worker's parts with their ledger entries (one record,
    exactly once); returns the record and the chunk's stats (``tally.chunk_stats``).

    All files new (the rule): the record names the worker's entries object. Otherwise
    (``sizes`` used here): judged file by file, parts cut, entries inline."""
    existing = ledger.record_for(staged.commit_id)
    if existing is None and _all_new(ledger, staged):
        record = _named(staged, flow_run_id)
        return ledger.commit(record, chunk_entries(staged)), _assumed_stats(staged)
    files = staged.files
    judged = _judge(staged, files, ledger)
    if existing is not None:  # a retried commit: only finish it
        return ledger.commit(existing), chunk_stats(judged, ledger, None, staged.summary)
    summary = staged.summary
    if judged.status != _assumed_status(files):
        summary = _restage(ledger, staged, files, judged, low_confidence)
    if staged.entries_file:  # its entries are inline in this record
        ledger.loc.delete(staged.entries_file)
    record = CommitRecord(seq=0, commit_id=staged.commit_id, kind="classify",
                          created_at=staged.at, flow_run_id=flow_run_id,
                          model_version=staged.model_version,
                          entries=judged.entries(sizes), parts=staged.parts)
    return ledger.commit(record), chunk_stats(judged, ledger, None, summary)


def commit_staged_group(ledger: Ledger, staged: list[StagedChunk],
                        sizes: list[dict[str, tuple[int, int]]], flow_run_id: str | None,
                        low_confidence: float) -> list[tuple[CommitRecord, dict[str, Any]]]:
    """Commit several workers' chunks, in order, with as few records as exactly-once
    allows (group commit): consecutive all-new chunks (none of their content in the ledger
    or in another chunk of the group) go into one record file, one write (one PUT on
    ``s3://``) for all. A chunk that is not all new, or already committed (a retry), ends
    the group and is committed alone by ``commit_staged`` (judged against the ledger with
    the group in it). Returns ``commit_staged``'s pair for each chunk."""
    out: list[tuple[CommitRecord, dict[str, Any]]] = []
    group: list[StagedChunk] = []
    pending: list[pa.ChunkedArray] = []

    def flush() -> None:
        if group:
            recs = ledger.commit_group([_named(s, flow_run_id) for s in group],
                                       [chunk_entries(s) for s in group])
            out.extend(zip(recs, [_assumed_stats(s) for s in group], strict=True))
            group.clear()
            pending.clear()

    for st, sz in zip(staged, sizes, strict=True):
        known = pa.concat_arrays([c for p in pending for c in p.chunks]) if pending else None
        if ledger.record_for(st.commit_id) is None and _all_new(ledger, st, known):
            group.append(st)
            pending.append(_shas(st))
            continue
        flush()
        out.append(commit_staged(ledger, st, sz, flow_run_id, low_confidence))
    flush()
    return out


def _assumed_stats(staged: StagedChunk) -> dict[str, Any]:
    """``chunk_stats`` of a chunk whose files are all new, from its columns: every file read
    is classified or rejected, none known before (so none to re-judge when moved)."""
    o = staged.outcomes
    skipped = pc.is_valid(o["skipped"])
    bad = pc.fill_null(pc.and_(pc.invert(skipped), pc.not_equal(o["reason"], "")), False)
    good = pc.and_(pc.invert(skipped), pc.invert(bad))
    gone = o.filter(skipped)
    rejected = o.filter(bad)
    status = Counter({"classified": pc.sum(good).as_py() or 0,
                      "rejected": rejected.num_rows})
    status.update(gone["skipped"].to_pylist())
    summary = staged.summary
    return {"labels": summary["labels"], "warnings": summary["warnings"],
            "status": +status, "reasons": Counter(rejected["reason"].to_pylist()),
            "skipped": list(zip(gone["path"].to_pylist(), gone["skipped"].to_pylist(),
                                gone["detail"].to_pylist(), strict=True)),
            "frames": summary["frames"], "table": summary["table"],
            "prediction_stats": summary["prediction_stats"],
            "moved_ok": o.filter(good)["path"].to_pylist(),
            "moved_bad": rejected["path"].to_pylist()}


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
