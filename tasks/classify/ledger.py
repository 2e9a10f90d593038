"""The ledger: what has been processed, kept in the output location, committed exactly once.

Layout (it travels with the data, so a copied output knows what it already holds)::

    OUTPUT/_posebatch/lock                      flock'ed by the run writing to OUTPUT
    OUTPUT/_posebatch/lease.json                the writer lease of an s3:// output (lease.py)
    OUTPUT/_posebatch/ledger/commits/c-<seq>-<id>.json   one record per commit
    OUTPUT/_posebatch/ledger/segments/s-<first>-<last>.parquet   folded records (entries)
    OUTPUT/_posebatch/staging/<id>/...          parts written but not yet committed
    OUTPUT/_posebatch/quarantine/               unreadable parts set aside by a forget

Each entry records the part holding the file's rows (``part``); compaction and forgetting
(``tasks/classify/verify.py``) move entries to the part replacing theirs (``moves``), and a
``forgotten`` entry cancels the earlier entries of its (path, sha256).

A commit, in order:

1. the Parquet part(s) are written under ``staging/<id>/`` (fsync'ed);
2. the commit record (the files' identities and outcomes, and where each staged part goes)
   is written atomically (temporary file + fsync + rename): **this is the commit point**;
3. the staged parts are renamed into ``predictions/date=.../part-<seq>-<id>.parquet``.

On start (``reconcile``), under the lock: records whose parts are still staged are rolled
forward (step 3 again, idempotent); staging folders without a record are deleted (their
files are processed again); leftovers of an interrupted fold are removed. So a SIGKILL at
any instant leaves either no trace of a chunk or a commit that the next run completes: every
frame lands exactly once. Compaction uses the same record, with parts to remove.

Records are folded into Parquet segments (and segments merged) so that thousands of runs
stay fast: a segment covers a range of commit numbers, a record whose number a segment
covers is already folded, a segment inside another's range was merged.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tasks.classify import lease as leases
from tasks.io.faults import crash_point
from tasks.io.storage import Location

STATE = "_posebatch"
LOCK_FILE = f"{STATE}/lock"
COMMITS = f"{STATE}/ledger/commits"
SEGMENTS = f"{STATE}/ledger/segments"
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


class LockHeld(Exception):
    """Another run is writing to the same output."""


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

    @property
    def name(self) -> str:
        return f"c-{self.seq:010d}-{self.commit_id}.json"

    def to_json(self) -> bytes:
        # Not dataclasses.asdict: it deep-copies every entry, which was 85 % of a commit's
        # cost in the flow process (bench/bench_flow_commit.py); entries are plain values.
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        raw["parts"] = [asdict(p) for p in self.parts]
        return json.dumps(raw, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CommitRecord:
        raw = json.loads(data)
        raw["parts"] = [Part(**p) for p in raw.get("parts", [])]
        return cls(**raw)


def new_commit_id() -> str:
    return uuid.uuid4().hex[:12]


def staging_dir(commit_id: str) -> str:
    return f"{STAGING}/{commit_id}"


# -- small file-system helpers on top of Location (local fsync, remote copy) ----------------
def _fsync_dir(loc: Location, rel: str) -> None:
    if loc.is_remote:
        return
    fd = os.open(loc.path(rel), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(loc: Location, rel: str) -> None:
    """Create folder ``rel`` and fsync every folder it adds, and the parent of each: a new
    ``date=...`` partition (or staging folder) survives a power loss with the file in it,
    not only the leaf entry."""
    if loc.is_remote:
        return
    created = []
    folder = rel.strip("/")
    while folder and not os.path.isdir(loc.path(folder)):
        created.append(folder)
        folder = os.path.dirname(folder)
    if not created:
        return
    os.makedirs(loc.path(rel), exist_ok=True)
    for new in reversed(created):        # top-most first, then down to ``rel``
        _fsync_dir(loc, os.path.dirname(new))
        _fsync_dir(loc, new)


def _listdir(loc: Location, rel: str) -> list[tuple[str, bool]]:
    """(name, is_dir) directly inside ``rel``; empty if it does not exist."""
    sel = pafs.FileSelector(loc.path(rel), recursive=False, allow_not_found=True)
    out = []
    for info in loc.fs.get_file_info(sel):
        out.append((info.base_name, info.type == pafs.FileType.Directory))
    return sorted(out)


def move(loc: Location, src: str, dst: str) -> None:
    """Put a finished file at ``dst``: rename locally (then fsync the folder), copy+delete on
    object stores (the copy appears whole or not at all)."""
    if loc.is_remote:
        loc.fs.copy_file(loc.path(src), loc.path(dst))
        loc.delete(src)
        return
    makedirs_durable(loc, os.path.dirname(dst))
    os.replace(loc.path(src), loc.path(dst))
    _fsync_dir(loc, os.path.dirname(dst))


def remove_tree(loc: Location, rel: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        loc.fs.delete_dir(loc.path(rel))


def write_durable(loc: Location, rel: str, data: bytes) -> None:
    """Atomic write (``Location.write_bytes``) whose rename also survives a power loss."""
    makedirs_durable(loc, os.path.dirname(rel))
    loc.write_bytes(rel, data)
    _fsync_dir(loc, os.path.dirname(rel))


def _table(rec: CommitRecord) -> pa.Table:
    """The record's entries as ledger rows. Each file's part is derived from the record's
    parts (its dataset's final path), so records written before parts were tracked per file
    get them too."""
    entries = rec.entries
    cols: dict[str, list[Any]] = {f: [e.get(f) for e in entries] for f in ENTRY_FIELDS}
    finals = {p.final.split("/", 1)[0]: p.final for p in rec.parts}
    cols["part"] = [e.get("part") or finals.get(ROWS_IN.get(e.get("status"), "")) for e in entries]
    n = len(entries)
    cols.update(seq=[rec.seq] * n, commit_id=[rec.commit_id] * n,
                committed_at=[rec.created_at or None] * n, model_version=[rec.model_version] * n,
                flow_run_id=[rec.flow_run_id] * n)
    return pa.table(cols, schema=ENTRY_SCHEMA)


def effective(table: pa.Table) -> pa.Table:
    """Entries minus those a later ``forgotten`` entry of the same (path, sha256) cancels
    (and the forget entries themselves); row order kept (``lookup`` takes the first path).

    A forget entry with a ``model_version`` (a lost re-scored part) cancels only the entries
    of that version; one without cancels them all."""
    forgets = table.filter(pc.equal(table["status"], FORGOTTEN))
    if forgets.num_rows == 0:
        return table
    t = table.append_column("_i", pa.array(range(table.num_rows), pa.int64()))
    keep = pa.array([True] * table.num_rows)
    scoped = pc.is_valid(forgets["model_version"])
    for mine, keys in ((forgets.filter(pc.invert(scoped)), ["path", "sha256"]),
                       (forgets.filter(scoped), ["path", "sha256", "model_version"])):
        if mine.num_rows == 0:
            continue
        last = mine.group_by(keys).aggregate([("seq", "max")])
        j = t.join(last, keys=keys, join_type="left outer").sort_by("_i")
        later = pc.or_kleene(pc.is_null(j["seq_max"]), pc.greater(j["seq"], j["seq_max"]))
        keep = pc.and_(keep, pc.fill_null(later, True))
    kept = t.filter(pc.and_(keep, pc.not_equal(t["status"], FORGOTTEN)))
    return kept.select(ENTRY_SCHEMA.names).cast(ENTRY_SCHEMA)


def relocate(table: pa.Table, moves: dict[str, str]) -> pa.Table:
    """Entries whose part was replaced (compaction, forget) point at the replacing part."""
    if not moves or table.num_rows == 0:
        return table
    idx = pc.index_in(table["part"], value_set=pa.array(list(moves), pa.string()))
    moved = pc.take(pa.array(list(moves.values()), pa.string()), idx)
    col = table.schema.get_field_index("part")
    return table.set_column(col, "part", pc.coalesce(moved, table["part"]))


class Ledger:
    """The processing state of one output location; see the module docstring."""

    def __init__(self, output: str | Location):
        self.loc = output if isinstance(output, Location) else Location(output)
        self.records: list[CommitRecord] = []
        self.segments: list[tuple[int, int, str]] = []     # live (first, last, name)
        self.stale: list[str] = []                          # folded records, merged segments
        self.entries: pa.Table = ENTRY_SCHEMA.empty_table()

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, output: str | Location) -> Ledger:
        led = cls(output)
        led._load()
        return led

    def _load(self) -> None:
        segs = []
        for name, is_dir in _listdir(self.loc, SEGMENTS):
            if is_dir or not (name.startswith("s-") and name.endswith(".parquet")):
                continue
            first, last = (int(x) for x in name[2:-8].split("-"))
            segs.append((first, last, name))
        live = [s for s in segs
                if not any(o is not s and o[0] <= s[0] and s[1] <= o[1] and
                           (o[0], o[1]) != (s[0], s[1]) for o in segs)]
        self.stale = [f"{SEGMENTS}/{s[2]}" for s in segs if s not in live]
        self.segments = sorted(live)
        folded_to = max((s[1] for s in self.segments), default=0)
        tables = [pq.read_table(self.loc.path(f"{SEGMENTS}/{s[2]}"), filesystem=self.loc.fs,
                                schema=ENTRY_SCHEMA) for s in self.segments]
        self.records = []
        for name, is_dir in _listdir(self.loc, COMMITS):
            if is_dir or not (name.startswith("c-") and name.endswith(".json")):
                continue
            seq = int(name.split("-")[1])
            if seq <= folded_to:
                self.stale.append(f"{COMMITS}/{name}")
                continue
            self.records.append(CommitRecord.from_json(
                self.loc.read_bytes(f"{COMMITS}/{name}")))
        self.records.sort(key=lambda r: r.seq)
        tables += [_table(r) for r in self.records if r.entries]
        entries = effective(pa.concat_tables(tables) if tables else ENTRY_SCHEMA.empty_table())
        for rec in self.records:
            entries = relocate(entries, rec.moves)
        self.entries = entries.combine_chunks()

    # -- state -----------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return max([s[1] for s in self.segments] + [r.seq for r in self.records], default=0)

    def record_for(self, commit_id: str) -> CommitRecord | None:
        return next((r for r in self.records if r.commit_id == commit_id), None)

    def lookup(self, paths: list[str], shas: list[str]) -> tuple[set[tuple[str, str]],
                                                                   dict[str, str]]:
        """Processed identities among ``paths`` and the first path seen for each of ``shas``.

        Two vectorised membership scans over the ledger, so it stays fast at millions of rows.
        """
        e = self.entries
        if e.num_rows == 0 or not paths:
            return set(), {}
        by_path = e.filter(pc.is_in(e["path"], value_set=pa.array(paths, pa.string())))
        pairs = set(zip(by_path["path"].to_pylist(), by_path["sha256"].to_pylist(), strict=True))
        by_sha = e.filter(pc.is_in(e["sha256"], value_set=pa.array(shas, pa.string())))
        first: dict[str, str] = {}
        for p, s, st, d in zip(by_sha["path"].to_pylist(), by_sha["sha256"].to_pylist(),
                               by_sha["status"].to_pylist(), by_sha["detail"].to_pylist(),
                               strict=True):
            first.setdefault(s, d if st == "duplicate" and d else p)
        return pairs, first

    def rejected(self, paths: list[str]) -> set[str]:
        """Which of ``paths`` now hold content the ledger rejected (under any path): a copy
        of a rejected file is as bad as the file, e.g. when moving processed files."""
        e = self.entries
        if e.num_rows == 0 or not paths:
            return set()
        bad = set(e.filter(pc.equal(e["status"], "rejected"))["sha256"].to_pylist())
        if not bad:
            return set()
        mine = e.filter(pc.is_in(e["path"], value_set=pa.array(paths, pa.string())))
        latest = dict(zip(mine["path"].to_pylist(), mine["sha256"].to_pylist(), strict=True))
        return {p for p, sha in latest.items() if sha in bad}

    def judge(self, files: list[tuple[str, str]]) -> list[tuple[str | None, str | None]]:
        """For (path, sha256) pairs in processing order: ``(None, None)`` for new content,
        ``("unchanged", None)`` for an identity already processed, ``("duplicate", original
        path)`` for content already processed under another path (also earlier in ``files``).
        """
        pairs, first = self.lookup([p for p, _ in files], [s for _, s in files])
        out: list[tuple[str | None, str | None]] = []
        for path, sha in files:
            if (path, sha) in pairs:
                out.append(("unchanged", None))
            elif sha in first:
                out.append(("duplicate", first[sha]))
            else:
                out.append((None, None))
                pairs.add((path, sha))
                first[sha] = path
        return out

    # -- committing ------------------------------------------------------------------------
    def commit(self, record: CommitRecord) -> CommitRecord:
        """Write the record (the commit point), then move its staged parts into place.

        Idempotent by ``commit_id``: committing an already recorded id only finishes it."""
        done = self.record_for(record.commit_id)
        if done is None:
            record.seq = self.last_seq + 1
            record.created_at = record.created_at or datetime.now(UTC).isoformat()
            crash_point("staged")
            record.lease = self._fence()
            write_durable(self.loc, f"{COMMITS}/{record.name}", record.to_json())
            crash_point("recorded")
            self.records.append(record)
            self._apply(record)
            done = record
        self.finalize(done)
        return done

    def _fence(self) -> str | None:
        """An ``s3://`` output's lease proven still ours right before the commit point (its
        token goes into the record); a lease lost to another writer refuses the commit."""
        lease = leases.held(self.loc) if self.loc.is_remote else None
        if lease is None:
            return None
        try:
            return lease.fence()
        except leases.LeaseHeld as exc:
            raise LockHeld(str(exc)) from None

    def _apply(self, record: CommitRecord) -> None:
        """The in-memory entries after ``record``: its entries added, forgets and moves applied."""
        if record.entries:
            self.entries = pa.concat_tables([self.entries, _table(record)])
            if any(e.get("status") == FORGOTTEN for e in record.entries):
                self.entries = effective(self.entries)
        self.entries = relocate(self.entries, record.moves)

    def finalize(self, record: CommitRecord) -> int:
        """Step 3 of a commit (idempotent): staged parts into place, replaced parts removed."""
        moved = 0
        for part in record.parts:
            if self.loc.exists(part.staged):
                move(self.loc, part.staged, part.final)
                moved += 1
                crash_point("finalized")
        if record.removes:  # the new parts are in place, the replaced ones not yet gone
            crash_point(f"{record.kind}:removing")
        for rel in record.removes:
            self.loc.delete(rel)
        remove_tree(self.loc, staging_dir(record.commit_id))
        return moved

    def reconcile(self) -> dict[str, int]:
        """Finish what a killed run left: roll committed parts forward, drop uncommitted
        staging, clear temporary files and folded leftovers. Call it holding the lock."""
        rolled = sum(self.finalize(r) for r in self.records)
        missing = sum(1 for r in self.records for part in r.parts
                      if not self.loc.exists(part.final))
        ids = {r.commit_id for r in self.records}
        dropped = 0
        for name, is_dir in _listdir(self.loc, STAGING):
            if name not in ids:
                remove_tree(self.loc, f"{STAGING}/{name}") if is_dir else \
                    self.loc.delete(f"{STAGING}/{name}")
                dropped += 1
        for folder in (COMMITS, SEGMENTS):
            for name, is_dir in _listdir(self.loc, folder):
                if name.startswith(".") and not is_dir:     # an interrupted atomic write
                    self.loc.delete(f"{folder}/{name}")
        for rel in self.stale:
            self.loc.delete(rel)
        self.stale = []
        return {"rolled_forward": rolled, "discarded_staging": dropped, "missing_parts": missing}

    # -- folding ---------------------------------------------------------------------------
    def fold(self, min_records: int = 1) -> int:
        """Fold commit records into a Parquet segment; merge segments beyond MAX_SEGMENTS.

        Records must be finalized (``reconcile``/``commit`` do it). Returns records folded.
        Records that move parts (compaction, forget) change entries of older segments, so
        they are folded by one merge of every entry (moves applied): folding them into a
        segment of their own would lose the moves."""
        if len(self.records) < max(1, min_records):
            return 0
        first, last = self.records[0].seq, self.records[-1].seq
        folded = len(self.records)
        if any(r.moves for r in self.records):
            self._merge(last)
        else:
            self._write_segment(first, last, pa.concat_tables([_table(r) for r in self.records]))
            crash_point("fold:written")  # records still there: recognised as folded on load
            for r in self.records:
                self.loc.delete(f"{COMMITS}/{r.name}")
            self.records = []
            self.segments.append((first, last, _segment_name(first, last)))
            if len(self.segments) > MAX_SEGMENTS:
                self._merge(last)
        return folded

    def _merge(self, last: int) -> None:
        """Write every entry (forgets and moves applied) as one segment up to ``last``, then
        delete the records and segments it covers (a crash in between leaves them stale)."""
        lo = min([s[0] for s in self.segments] + [r.seq for r in self.records])
        self._write_segment(lo, last, self.entries)
        crash_point("fold:merged")
        for r in self.records:
            self.loc.delete(f"{COMMITS}/{r.name}")
        for s in self.segments:
            if (s[0], s[1]) != (lo, last):
                self.loc.delete(f"{SEGMENTS}/{s[2]}")
        self.records = []
        self.segments = [(lo, last, _segment_name(lo, last))]

    def _write_segment(self, first: int, last: int, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table.cast(ENTRY_SCHEMA), buf, compression="zstd")
        write_durable(self.loc, f"{SEGMENTS}/{_segment_name(first, last)}", buf.getvalue())


def _segment_name(first: int, last: int) -> str:
    return f"s-{first:010d}-{last:010d}.parquet"


class OutputLock:
    """One writer per output: ``fcntl.flock`` on ``OUTPUT/_posebatch/lock`` for a local
    output, the writer lease (``tasks/classify/lease.py``) for an ``s3://`` one.

    The kernel drops the lock when the process dies, even by SIGKILL, so a crashed run never
    leaves a stale lock; a dead holder's lease expires after its time to live.
    """

    def __init__(self, output: str | Location, lease_seconds: float = leases.DEFAULT_TTL):
        self.loc = output if isinstance(output, Location) else Location(output)
        self.lease = leases.Lease(self.loc, lease_seconds) if self.loc.is_remote else None
        self.path = "" if self.loc.is_remote else self.loc.path(LOCK_FILE)
        self._fh: Any = None

    def acquire(self) -> None:
        if self.lease is not None:
            try:
                self.lease.acquire()
            except leases.LeaseHeld as exc:
                raise LockHeld(str(exc)) from None
            leases.register(self.lease)
            self._fh = self.lease
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise LockHeld(f"another posebatch run is writing to {self.loc.uri_of()} "
                           f"({holder or 'holder unknown'}); wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{datetime.now(UTC).isoformat(timespec='seconds')}")
        fh.flush()
        self._fh = fh

    def acquire_within(self, seconds: float, poll: float = 5.0) -> OutputLock:
        """``acquire``, retried for up to ``seconds`` (a run started by an event waits for
        the nightly run instead of failing); ``LockHeld`` after that."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.acquire()
                return self
            except LockHeld:
                if time.monotonic() + poll > deadline:
                    raise
                time.sleep(poll)

    def release(self) -> None:
        if self.lease is not None and self._fh is not None:
            leases.unregister(self.lease)
            self.lease.release()
            self._fh = None
            return
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.seek(0)
                self._fh.truncate()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> OutputLock:
        if self._fh is None:  # not already taken (``acquire_within``)
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def probe(self) -> None:
        """Raise ``LockHeld`` now if another run holds the lock (take it and let go)."""
        self.acquire()
        self.release()
