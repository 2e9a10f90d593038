"""The ledger's record format: where its files live, what an entry is, what a commit says.

The one owner of what is written to ``_posebatch/``: every other ledger module reads and
writes through these names, so a change of format is made (and versioned) here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa

STATE = "_posebatch"
LOCK_FILE = f"{STATE}/lock"
COMMITS = f"{STATE}/ledger/commits"
SEGMENTS = f"{STATE}/ledger/segments"
CHUNKS = f"{STATE}/ledger/chunks"      # a chunk's entries, written by the worker (format 3)
STAGING = f"{STATE}/staging"
QUARANTINE = f"{STATE}/quarantine"
MAX_SEGMENTS = 8

# Outcome of a file: classified (rows in predictions), rejected (a row in rejections),
# duplicate (content already processed under another path: recognised, no new rows),
# unchanged (same path and content, only its time stamp changed: no new rows).
# ``forgotten`` is not an outcome but an override: it cancels every earlier entry of the same
# (path, sha256), so the file is new again (its part was lost, or ``posebatch ledger forget``).
# ``rescored``: rows of an already classified file from another model version
# (``posebatch rescore``); the entry's ``model_version`` says which.
STATUSES = ("classified", "rejected", "duplicate", "unchanged", "rescored")
FORGOTTEN = "forgotten"

ENTRY_SCHEMA = pa.schema([
    pa.field("path", pa.string()),
    pa.field("sha256", pa.string()),
    pa.field("size", pa.int64()),
    pa.field("mtime_ns", pa.int64()),
    pa.field("status", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("frames", pa.int32()),
    pa.field("seq", pa.int64()),
    pa.field("commit_id", pa.string()),
    # Where the file's rows are (the committed part; null when it has none), and when, by
    # which model and flow run it was committed. Null in ledgers written before these
    # columns existed (Parquet readers fill a missing column with nulls).
    pa.field("part", pa.string()),
    pa.field("committed_at", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("flow_run_id", pa.string()),
])
ENTRY_FIELDS = ("path", "sha256", "size", "mtime_ns", "status", "reason", "detail", "frames")
# The dataset whose part holds the rows of a file of each status (tasks/io/schema.py names).
ROWS_IN = {"classified": "predictions", "rejected": "rejections", "rescored": "predictions"}
CHUNK_COLUMNS = (*ENTRY_FIELDS, "part")   # an entries object: ENTRY_SCHEMA's per-file columns

# The commit record format. A reader reads every format up to its own and refuses a newer
# one in one line (``NewerFormat``); a writer writes the oldest format that holds what it
# writes, so an older posebatch still reads every record whose shape it knows.
#   1  entries inline, one per file (no ``format`` key)
#   2  + ``lease``: the token of the s3:// writer lease (no ``format`` key either; posebatch
#      before it fails on such records, it cannot be taught to read them)
#   3  + ``format``, ``entries_file``, ``entries_rows``: a chunk's entries may sit in a
#      Parquet object (``CHUNKS/<commit id>.parquet``) that the worker wrote, the record
#      naming it and its row count instead of listing every file
#   4  a group: ``{"format": 4, "records": [record, ...]}``, the records (each of format
#      3 or older, consecutive numbers) of several chunks committed by one write, one
#      commit point for all (group commit: one PUT for every chunk ready at once). Named
#      after its first record, so a format-3 reader refuses it instead of skipping it.
RECORD_FORMAT = 3   # what one record is written in
GROUP_FORMAT = 4    # a file of several records
FORMAT = GROUP_FORMAT   # the newest this posebatch reads


class NewerFormat(ValueError):
    """A commit record written by a newer posebatch than this one can read."""


class LedgerDamaged(ValueError):
    """A commit record's entries object is missing or does not match the record."""


@dataclass
class Part:
    """A staged file and the final path it is renamed to once committed."""

    staged: str
    final: str


@dataclass
class CommitRecord:
    seq: int
    commit_id: str
    kind: str = "classify"                      # or "compact"
    created_at: str = ""
    flow_run_id: str | None = None
    model_version: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)   # compaction: parts it replaces
    # old part -> the new part now holding its remaining rows (compaction, forget)
    moves: dict[str, str] = field(default_factory=dict)
    lease: str | None = None   # s3:// outputs: the token of the writer lease it was made under
    entries_file: str | None = None   # format 3: the chunk's entries object (CHUNKS/...)
    entries_rows: int = 0             # and its row count, checked on reading
    format: int = RECORD_FORMAT
    # The file holding it when it was committed in a group (format 4); not written.
    group_file: str | None = field(default=None, compare=False)

    @property
    def files(self) -> int:
        """How many files the record holds entries for (inline or in its entries object)."""
        return self.entries_rows if self.entries_file else len(self.entries)

    @property
    def name(self) -> str:
        """The file holding the record: its own, or its group's."""
        return self.group_file or f"c-{self.seq:010d}-{self.commit_id}.json"

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every entry, which was 85 % of a commit's
        # cost in the flow process (bench/bench_flow_commit.py); entries are plain values.
        raw = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "group_file"}
        raw["parts"] = [asdict(p) for p in self.parts]
        return raw

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, raw: dict[str, Any], name: str = "a commit record") -> CommitRecord:
        version = raw.setdefault("format", 2 if "lease" in raw else 1)
        _readable(version, name)
        if version == GROUP_FORMAT:   # a group's records are of older formats
            raise LedgerDamaged(f"{name}: format {GROUP_FORMAT} is a group of records, and "
                                f"this has none")
        raw["parts"] = [Part(**p) for p in raw.get("parts", [])]
        return cls(**raw)

    @classmethod
    def from_json(cls, data: bytes, name: str = "a commit record") -> CommitRecord:
        return cls.from_dict(json.loads(data), name)


def _readable(version: Any, name: str) -> None:
    if not isinstance(version, int) or version > FORMAT:
        raise NewerFormat(f"{name} has record format {version}, newer than this posebatch "
                          f"reads (up to {FORMAT}): upgrade posebatch on this machine")


def group_name(records: list[CommitRecord]) -> str:
    """A group's file name: its first record's own (``c-<seq>-<id>.json``), so the fold's
    and replay's reading of a record's number from its name holds for groups too."""
    return f"c-{records[0].seq:010d}-{records[0].commit_id}.json"


def group_json(records: list[CommitRecord]) -> bytes:
    """Several records as one file (format 4): one write commits them all."""
    body = {"format": GROUP_FORMAT, "records": [r.to_dict() for r in records]}
    return json.dumps(body, separators=(",", ":")).encode()


def records_from_json(data: bytes, name: str = "a commit record") -> list[CommitRecord]:
    """The records of one file: one record (formats 1-3) or a group (format 4)."""
    raw = json.loads(data)
    if "records" not in raw:
        return [CommitRecord.from_dict(raw, name)]
    _readable(raw.get("format"), name)
    records = [CommitRecord.from_dict(r, name) for r in raw["records"]]
    for rec in records:
        rec.group_file = name.rsplit("/", 1)[-1]
    return records


def new_commit_id() -> str:
    return uuid.uuid4().hex[:12]


def staging_dir(commit_id: str) -> str:
    return f"{STAGING}/{commit_id}"


def segment_name(first: int, last: int) -> str:
    return f"s-{first:010d}-{last:010d}.parquet"


def chunks_file(commit_id: str) -> str:
    return f"{CHUNKS}/{commit_id}.parquet"


def record_table(rec: CommitRecord, chunk: pa.Table | None = None) -> pa.Table:
    """The record's entries as ledger rows: inline ones, or ``chunk`` (the rows of its
    entries object, ``CHUNK_COLUMNS``) with the record's own columns added.

    Each inline file's part is derived from the record's parts (its dataset's final path),
    so records written before parts were tracked per file get them too."""
    if chunk is not None:
        n = chunk.num_rows
        same = {"seq": rec.seq, "commit_id": rec.commit_id,
                "committed_at": rec.created_at or None, "model_version": rec.model_version,
                "flow_run_id": rec.flow_run_id}
        arrays = [chunk.column(f.name) if f.name in CHUNK_COLUMNS
                  else pa.repeat(pa.scalar(same[f.name], f.type), n) for f in ENTRY_SCHEMA]
        return pa.Table.from_arrays(arrays, names=ENTRY_SCHEMA.names).cast(ENTRY_SCHEMA)
    entries = rec.entries
    cols: dict[str, list[Any]] = {f: [e.get(f) for e in entries] for f in ENTRY_FIELDS}
    finals = {p.final.split("/", 1)[0]: p.final for p in rec.parts}
    cols["part"] = [e.get("part") or finals.get(ROWS_IN.get(e.get("status"), "")) for e in entries]
    n = len(entries)
    cols.update(seq=[rec.seq] * n, commit_id=[rec.commit_id] * n,
                committed_at=[rec.created_at or None] * n, model_version=[rec.model_version] * n,
                flow_run_id=[rec.flow_run_id] * n)
    return pa.table(cols, schema=ENTRY_SCHEMA)
