"""Folding: commit records into Parquet segments, and segments into fewer, so that thousands
of runs stay fast to load.

A fold writes the segment first and deletes what it covers after: a crash in between leaves
records or segments that the segment's range marks as stale (``replay``), which ``reconcile``
deletes. Never lost, never counted twice.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.classify.ledger.files import write_durable
from tasks.classify.ledger.records import (
    COMMITS,
    ENTRY_SCHEMA,
    MAX_SEGMENTS,
    SEGMENTS,
    record_table,
    segment_name,
)
from tasks.classify.ledger.replay import read_chunk
from tasks.io.faults import crash_point
from tasks.io.storage import Location

if TYPE_CHECKING:
    from tasks.classify.ledger.book import Ledger


def fold(led: Ledger, min_records: int = 1) -> int:
    """Fold the ledger's commit records into a segment; merge segments beyond MAX_SEGMENTS.

    Records must be finalized (``reconcile``/``commit`` do it). Returns records folded.
    Records that move parts (compaction, forget) change entries of older segments, so they
    are folded by one merge of every entry (moves applied): folding them into a segment of
    their own would lose the moves."""
    if len(led.records) < max(1, min_records):
        return 0
    first, last = led.records[0].seq, led.records[-1].seq
    folded = len(led.records)
    if any(r.moves for r in led.records):
        merge(led, last)
    else:
        write_segment(led.loc, first, last, pa.concat_tables(
            [record_table(r, read_chunk(led.loc, r)) for r in led.records]))
        crash_point("fold:written")  # records still there: recognised as folded on load
        _delete_records(led)
        led.segments.append((first, last, segment_name(first, last)))
        if len(led.segments) > MAX_SEGMENTS:
            merge(led, last)
    return folded


def merge(led: Ledger, last: int) -> None:
    """Write every entry (forgets and moves applied) as one segment up to ``last``, then
    delete the records and segments it covers (a crash in between leaves them stale)."""
    lo = min([s[0] for s in led.segments] + [r.seq for r in led.records])
    write_segment(led.loc, lo, last, led.entries)
    crash_point("fold:merged")
    _delete_records(led)
    for s in led.segments:
        if (s[0], s[1]) != (lo, last):
            led.loc.delete(f"{SEGMENTS}/{s[2]}")
    led.segments = [(lo, last, segment_name(lo, last))]


def _delete_records(led: Ledger) -> None:
    """Folded: each record, then its entries object (a crash in between leaves the object
    unnamed, which ``reconcile`` deletes)."""
    gone = set()
    for r in led.records:
        if r.name not in gone:   # a group's file once
            led.loc.delete(f"{COMMITS}/{r.name}")
            gone.add(r.name)
        if r.entries_file:
            led.loc.delete(r.entries_file)
    led.records = []


def write_segment(loc: Location, first: int, last: int, table: pa.Table) -> None:
    """The entries of commits ``first``..``last`` as one Parquet segment (atomic, durable)."""
    buf = io.BytesIO()
    pq.write_table(table.cast(ENTRY_SCHEMA), buf, compression="zstd")
    write_durable(loc, f"{SEGMENTS}/{segment_name(first, last)}", buf.getvalue())
