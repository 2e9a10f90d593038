"""The ``Ledger``: one output's processing state, what it knows, and its commits.

It owns the commit protocol (the package docstring gives the order), the fence that refuses
a commit whose ``s3://`` lease was lost, and ``reconcile``, which finishes what a killed run
left. Reading back is ``replay``'s, folding ``fold``'s.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from tasks.classify import lease as leases
from tasks.classify.ledger import fold as folding
from tasks.classify.ledger.files import (
    copy_if_present,
    listdir,
    move_if_present,
    remove_tree,
    write_durable,
)
from tasks.classify.ledger.lock import LockHeld
from tasks.classify.ledger.records import (
    CHUNKS,
    COMMITS,
    ENTRY_SCHEMA,
    FORGOTTEN,
    SEGMENTS,
    STAGING,
    CommitRecord,
    group_json,
    group_name,
    record_table,
    staging_dir,
)
from tasks.classify.ledger.replay import effective, read_chunk, relocate, replay
from tasks.io.faults import crash_point
from tasks.io.storage import Location


class Ledger:
    """The processing state of one output location; see the package docstring."""

    def __init__(self, output: str | Location):
        self.loc = output if isinstance(output, Location) else Location(output)
        self.records: list[CommitRecord] = []
        self.segments: list[tuple[int, int, str]] = []     # live (first, last, name)
        self.stale: list[str] = []                          # folded records, merged segments
        self.entries: pa.Table = ENTRY_SCHEMA.empty_table()
        self._pool: ThreadPoolExecutor | None = None     # finalize_in_background
        self._pending: list[Future[int]] = []

    @classmethod
    def load(cls, output: str | Location) -> Ledger:
        led = cls(output)
        state = replay(led.loc)
        led.segments, led.records = state.segments, state.records
        led.stale, led.entries = state.stale, state.entries
        return led

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
    def commit(self, record: CommitRecord, chunk: pa.Table | None = None) -> CommitRecord:
        """Write the record (the commit point), then move its staged parts into place.

        ``chunk``: the rows of the record's entries object, when the caller has them (they
        are read back otherwise). Idempotent by ``commit_id``: committing an already
        recorded id only finishes it."""
        return self.commit_group([record], [chunk])[0]

    def commit_group(self, records: list[CommitRecord],
                     chunks: list[pa.Table | None] | None = None) -> list[CommitRecord]:
        """Commit several records with one write (one fence, one PUT on ``s3://``): all of
        them are committed or none. The records get consecutive numbers in list order, as
        ``commit`` one by one would give them; a record whose id is already committed is
        only finished. A single new record is written alone (format 3), several as a
        group (format 4, ``records.group_json``)."""
        chunks = chunks or [None] * len(records)
        done = [self.record_for(r.commit_id) for r in records]
        new = [(r, c) for r, c, d in zip(records, chunks, done, strict=True) if d is None]
        if new:
            self._record([r for r, _ in new])
            for rec, chunk in new:
                self.records.append(rec)
                self._apply(rec, chunk)
        out = [d or r for r, d in zip(records, done, strict=True)]
        for rec, was in zip(out, done, strict=True):
            if self._pool is not None and was is None:
                self._pending.append(self._pool.submit(self.finalize, rec))
            else:
                self.finalize(rec)
        return out

    def _record(self, records: list[CommitRecord]) -> None:
        """Number the records, fence, and write them as one file: the commit point."""
        for i, rec in enumerate(records, start=self.last_seq + 1):
            rec.seq = i
            rec.created_at = rec.created_at or datetime.now(UTC).isoformat()
        crash_point("staged")
        lease = self._fence()
        for rec in records:
            rec.lease = lease
        if len(records) == 1:
            write_durable(self.loc, f"{COMMITS}/{records[0].name}", records[0].to_json())
        else:
            name = group_name(records)
            write_durable(self.loc, f"{COMMITS}/{name}", group_json(records))
            for rec in records:
                rec.group_file = name
        crash_point("recorded")

    def finalize_in_background(self, threads: int = 8) -> None:
        """From now on, move each commit's parts into place on a thread pool after its
        commit point, so that the caller goes on to the next commit at once (on object
        storage: a copy a part and two requests for the staging folder, off the flow's
        critical path; 8 threads, within boto3's 10 pooled connections). Readers see a chunk's
        rows when ``flush`` returns; a process killed before that leaves committed records
        with staged parts, which ``reconcile`` rolls forward as after any crash."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="posebatch-finalize")

    def flush(self) -> None:
        """Wait until every commit's parts are in place (``finalize_in_background``); the
        first failure is raised. Back to finalizing in the caller's thread."""
        pending, self._pending = self._pending, []
        pool, self._pool = self._pool, None
        try:
            for fut in pending:
                fut.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

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

    def _apply(self, record: CommitRecord, chunk: pa.Table | None = None) -> None:
        """The in-memory entries after ``record``: its entries added, forgets and moves applied."""
        if record.entries_file:
            rows = chunk if chunk is not None else read_chunk(self.loc, record)
            self.entries = pa.concat_tables([self.entries, record_table(record, rows)])
        if record.entries:
            self.entries = pa.concat_tables([self.entries, record_table(record)])
            if any(e.get("status") == FORGOTTEN for e in record.entries):
                self.entries = effective(self.entries)
        self.entries = relocate(self.entries, record.moves)

    def finalize(self, record: CommitRecord) -> int:
        """Step 3 of a commit (idempotent): staged parts into place, replaced parts removed."""
        moved = 0
        staging = staging_dir(record.commit_id) + "/"
        for part in record.parts:
            # On object storage a part under the commit's staging folder is only copied:
            # the folder's one delete below removes it with the rest (one request a part
            # fewer); until then a repeated finalize copies the same bytes again.
            inside = self.loc.is_remote and part.staged.startswith(staging)
            if (copy_if_present if inside else move_if_present)(self.loc, part.staged,
                                                                part.final):
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
        self.flush()
        rolled = sum(self.finalize(r) for r in self.records)
        missing = sum(1 for r in self.records for part in r.parts
                      if not self.loc.exists(part.final))
        ids = {r.commit_id for r in self.records}
        dropped = set()
        for name, is_dir in listdir(self.loc, STAGING):
            if name not in ids:
                remove_tree(self.loc, f"{STAGING}/{name}") if is_dir else \
                    self.loc.delete(f"{STAGING}/{name}")
                dropped.add(name)
        dropped |= self._drop_unnamed_chunks()
        for folder in (COMMITS, SEGMENTS):
            for name, is_dir in listdir(self.loc, folder):
                if name.startswith(".") and not is_dir:     # an interrupted atomic write
                    self.loc.delete(f"{folder}/{name}")
        for rel in self.stale:
            self.loc.delete(rel)
        self.stale = []
        return {"rolled_forward": rolled, "discarded_staging": len(dropped),
                "missing_parts": missing}

    def _drop_unnamed_chunks(self) -> set[str]:
        """Delete entries objects no live record names: a worker's whose chunk was never
        committed (returned: discarded like its staging) or a folded record's (a fold that
        crashed before deleting it; its rows are in a segment)."""
        named = {r.entries_file for r in self.records}
        folded = set(pc.unique(self.entries["commit_id"]).to_pylist())
        dropped = set()
        for name, _ in listdir(self.loc, CHUNKS):
            if f"{CHUNKS}/{name}" in named:
                continue
            self.loc.delete(f"{CHUNKS}/{name}")
            cid = name.removesuffix(".parquet")
            if not name.startswith(".") and cid not in folded:
                dropped.add(cid)
        return dropped

    def fold(self, min_records: int = 1) -> int:
        """Fold commit records into a Parquet segment (``fold.fold``); records folded."""
        self.flush()
        return folding.fold(self, min_records)
