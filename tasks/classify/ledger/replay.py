"""Reading a ledger back: its segments and commit records replayed into one entries table.

A segment covers a range of commit numbers; a record whose number a segment covers is
already folded (left behind by a fold that crashed before deleting it), and a segment inside
another's range was merged: both are ``stale``, skipped here and deleted by ``reconcile``.
The live entries are the segments' rows, then each record's, minus what ``forgotten`` entries
cancel, with every record's ``moves`` applied (compaction and forgetting move rows to a new
part).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.classify.ledger.files import listdir
from tasks.classify.ledger.records import (
    CHUNK_COLUMNS,
    COMMITS,
    ENTRY_SCHEMA,
    FORGOTTEN,
    SEGMENTS,
    CommitRecord,
    LedgerDamaged,
    record_table,
    records_from_json,
)
from tasks.io.storage import Location


@dataclass
class Replayed:
    """What ``replay`` found: live segments, unfolded records, stale files and the entries."""

    segments: list[tuple[int, int, str]] = field(default_factory=list)   # (first, last, name)
    records: list[CommitRecord] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    entries: pa.Table = field(default_factory=ENTRY_SCHEMA.empty_table)


def _segments(loc: Location) -> tuple[list[tuple[int, int, str]], list[str]]:
    """Live segments, sorted, and the paths of the merged (stale) ones."""
    segs = []
    for name, is_dir in listdir(loc, SEGMENTS):
        if is_dir or not (name.startswith("s-") and name.endswith(".parquet")):
            continue
        first, last = (int(x) for x in name[2:-8].split("-"))
        segs.append((first, last, name))
    live = [s for s in segs
            if not any(o is not s and o[0] <= s[0] and s[1] <= o[1] and
                       (o[0], o[1]) != (s[0], s[1]) for o in segs)]
    return sorted(live), [f"{SEGMENTS}/{s[2]}" for s in segs if s not in live]


def replay(loc: Location) -> Replayed:
    """The ledger of ``loc`` as it stands: see the module docstring."""
    segments, stale = _segments(loc)
    folded_to = max((s[1] for s in segments), default=0)
    tables = [pq.read_table(loc.path(f"{SEGMENTS}/{s[2]}"), filesystem=loc.fs,
                            schema=ENTRY_SCHEMA) for s in segments]
    records = []
    for name, is_dir in listdir(loc, COMMITS):
        if is_dir or not (name.startswith("c-") and name.endswith(".json")):
            continue
        if int(name.split("-")[1]) <= folded_to:   # a group's first: folds cover groups whole
            stale.append(f"{COMMITS}/{name}")
            continue
        records += records_from_json(loc.read_bytes(f"{COMMITS}/{name}"),
                                     f"{loc.uri_of()}/{COMMITS}/{name}")
    records.sort(key=lambda r: r.seq)
    tables += [record_table(r, read_chunk(loc, r)) for r in records
               if r.entries or r.entries_file]
    entries = effective(pa.concat_tables(tables) if tables else ENTRY_SCHEMA.empty_table())
    for rec in records:
        entries = relocate(entries, rec.moves)
    return Replayed(segments, records, stale, entries.combine_chunks())


def read_chunk(loc: Location, rec: CommitRecord) -> pa.Table | None:
    """The rows of a record's entries object (format 3); None for inline entries."""
    if not rec.entries_file:
        return None
    try:
        table = pq.read_table(loc.path(rec.entries_file), filesystem=loc.fs,
                              columns=list(CHUNK_COLUMNS))
    except (FileNotFoundError, OSError) as exc:
        raise LedgerDamaged(f"{loc.uri_of()}: commit {rec.seq} names entries object "
                            f"{rec.entries_file}, which cannot be read ({exc})") from None
    if table.num_rows != rec.entries_rows:
        raise LedgerDamaged(f"{loc.uri_of()}: entries object {rec.entries_file} has "
                            f"{table.num_rows} rows, its commit {rec.seq} says "
                            f"{rec.entries_rows}")
    return table


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
