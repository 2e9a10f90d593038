"""The ledger: commit records, crash recovery at each step, folding, identity, the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.classify.ledger import (
    CHUNKS,
    COMMITS,
    MAX_SEGMENTS,
    SEGMENTS,
    CommitRecord,
    Ledger,
    LockHeld,
    OutputLock,
    Part,
    staging_dir,
    write_durable,
)
from tasks.classify.ledger.fold import write_segment
from tasks.classify.ledger.records import (
    CHUNK_COLUMNS,
    ENTRY_SCHEMA,
    LedgerDamaged,
    NewerFormat,
)
from tasks.io.storage import Location


def entry(path: str, sha: str, status: str = "classified") -> dict:
    return {"path": path, "sha256": sha, "size": 10, "mtime_ns": 5, "status": status,
            "reason": None, "detail": None, "frames": 1}


def staged_record(led: Ledger, cid: str, paths: list[str], data: bytes = b"rows") -> CommitRecord:
    """Stage one part (step 1 of a commit) and return the record that would commit it."""
    staged = f"{staging_dir(cid)}/predictions.parquet"
    write_durable(led.loc, staged, data)
    return CommitRecord(seq=0, commit_id=cid, entries=[entry(p, "sha-" + p) for p in paths],
                        parts=[Part(staged, f"predictions/date=2026-01-01/part-{cid}.parquet")])


def test_commit_moves_the_part_and_survives_a_reload(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    rec = led.commit(staged_record(led, "aaa", ["b/1.npy", "b/2.npy"]))
    assert rec.seq == 1
    assert (tmp_path / "predictions/date=2026-01-01/part-aaa.parquet").read_bytes() == b"rows"
    assert not (tmp_path / staging_dir("aaa")).exists()
    again = Ledger.load(str(tmp_path))
    assert again.entries.column("path").to_pylist() == ["b/1.npy", "b/2.npy"]
    assert again.last_seq == 1
    # Committing the same id again (a retried task) writes nothing new.
    again.commit(CommitRecord(seq=0, commit_id="aaa", entries=[entry("b/1.npy", "x")]))
    assert len(list((tmp_path / COMMITS).iterdir())) == 1
    assert Ledger.load(str(tmp_path)).entries.num_rows == 2


def test_uncommitted_staging_is_discarded_on_reconcile(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    staged_record(led, "bbb", ["b/1.npy"])          # killed before the commit record
    (tmp_path / COMMITS).mkdir(parents=True)
    (tmp_path / COMMITS / ".c-0000000001-bbb.json.x.tmp").write_bytes(b"{half")
    fresh = Ledger.load(str(tmp_path))
    report = fresh.reconcile()
    assert report["discarded_staging"] == 1
    assert not (tmp_path / staging_dir("bbb")).exists()
    assert list((tmp_path / COMMITS).iterdir()) == []
    assert fresh.entries.num_rows == 0
    assert not (tmp_path / "predictions").exists()


def test_committed_but_unrenamed_parts_are_rolled_forward(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    rec = staged_record(led, "ccc", ["b/1.npy"])
    rec.seq = 1
    write_durable(led.loc, f"{COMMITS}/{rec.name}", rec.to_json())  # killed after the record
    fresh = Ledger.load(str(tmp_path))
    assert fresh.entries.column("path").to_pylist() == ["b/1.npy"]
    report = fresh.reconcile()
    assert report == {"rolled_forward": 1, "discarded_staging": 0, "missing_parts": 0}
    assert (tmp_path / rec.parts[0].final).read_bytes() == b"rows"
    assert not (tmp_path / staging_dir("ccc")).exists()
    assert Ledger.load(str(tmp_path)).reconcile()["rolled_forward"] == 0  # idempotent


def test_fold_and_merge_keep_every_entry_and_recover_from_a_half_done_fold(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    n = 0
    for round_ in range(MAX_SEGMENTS + 2):
        for k in range(2):
            led.commit(CommitRecord(seq=0, commit_id=f"r{round_}k{k}",
                                    entries=[entry(f"f{n}.npy", f"s{n}")]))
            n += 1
        assert led.fold() == 2
    segs = sorted(p.name for p in (tmp_path / SEGMENTS).iterdir())
    assert len(segs) <= MAX_SEGMENTS
    assert list((tmp_path / COMMITS).iterdir()) == []
    again = Ledger.load(str(tmp_path))
    assert sorted(again.entries.column("path").to_pylist()) == sorted(f"f{i}.npy"
                                                                        for i in range(n))
    assert again.last_seq == n
    # A fold killed after writing its segment but before deleting the records: the records
    # are recognised as folded (no double entries) and cleaned up.
    again.commit(CommitRecord(seq=0, commit_id="late", entries=[entry("late.npy", "sl")]))
    rec_files = list((tmp_path / COMMITS).iterdir())
    write_segment(again.loc, n + 1, n + 1, again.entries.slice(again.entries.num_rows - 1))
    assert rec_files[0].exists()
    third = Ledger.load(str(tmp_path))
    assert third.entries.num_rows == n + 1
    third.reconcile()
    assert not rec_files[0].exists()


def test_judge_recognises_unchanged_and_duplicate_content(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    led.commit(CommitRecord(seq=0, commit_id="x", entries=[entry("a/1.npy", "S1"),
                                                           entry("a/2.npy", "S2", "rejected")]))
    verdicts = led.judge([("a/1.npy", "S1"),        # same path, same content
                          ("b/1.npy", "S1"),        # renamed or copied
                          ("a/1.npy", "S9"),        # rewritten with new content
                          ("c/new.npy", "S7"),      # new
                          ("c/copy.npy", "S7"),     # a copy of a file earlier in this chunk
                          ("c/bad.npy", "S2")])     # content rejected before
    assert verdicts == [("unchanged", None), ("duplicate", "a/1.npy"), (None, None),
                        (None, None), ("duplicate", "c/new.npy"), ("duplicate", "a/2.npy")]


def test_lock_refuses_a_second_writer_with_a_clear_message(tmp_path: Path):
    with OutputLock(str(tmp_path)):
        with pytest.raises(LockHeld) as err:
            OutputLock(str(tmp_path)).acquire()
        msg = str(err.value)
        assert f"pid {os.getpid()}" in msg and str(tmp_path) in msg
        assert "\n" not in msg
    OutputLock(str(tmp_path)).probe()  # released


def test_lock_of_a_killed_process_is_released_by_the_kernel(tmp_path: Path):
    code = ("import sys, time; from tasks.classify.ledger import OutputLock; "
            "lock = OutputLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {proc.pid}"):
            OutputLock(str(tmp_path)).probe()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 5
    while True:
        try:
            OutputLock(str(tmp_path)).probe()
            break
        except LockHeld:
            assert time.time() < deadline
            time.sleep(0.05)


def test_a_lock_can_be_waited_for_within_a_bound(tmp_path):
    """An event-started run waits for the nightly run's lock, up to a bound, then fails."""
    import threading

    from tasks.classify.ledger import LockHeld, OutputLock

    held = OutputLock(str(tmp_path))
    held.acquire()
    with pytest.raises(LockHeld):
        OutputLock(str(tmp_path)).acquire_within(0.2, poll=0.05)
    threading.Timer(0.3, held.release).start()
    with OutputLock(str(tmp_path)).acquire_within(5, poll=0.05) as mine:
        assert mine._fh is not None               # taken once, not twice
    OutputLock(str(tmp_path)).probe()             # and released on exit


def test_every_older_record_format_is_read_and_a_newer_one_refused(tmp_path: Path):
    """Format 1 (entries inline), 2 (+ lease) and 3 (+ an entries object) side by side in
    one ledger, as an output written by successive posebatch versions holds them (format 4,
    a group of such records in one file: tests/tasks/classify/test_staged.py)."""
    def raw(seq: int, cid: str, **more) -> None:
        body = {"seq": seq, "commit_id": cid, "kind": "classify", "created_at": "",
                "flow_run_id": None, "model_version": "v0001", "entries": [],
                "parts": [], "removes": [], "moves": {}, **more}
        write_durable(Location(str(tmp_path)), f"{COMMITS}/c-{seq:010d}-{cid}.json",
                      json.dumps(body).encode())

    raw(1, "one", entries=[entry("a/1.npy", "s1")])
    raw(2, "two", entries=[entry("a/2.npy", "s2")], lease="token")
    rows = pa.table({**{k: [v] for k, v in entry("a/3.npy", "s3").items()}, "part": ["p"]},
                    schema=pa.schema([ENTRY_SCHEMA.field(n) for n in CHUNK_COLUMNS]))
    (tmp_path / CHUNKS).mkdir(parents=True)
    pq.write_table(rows, tmp_path / CHUNKS / "three.parquet")
    raw(3, "three", lease=None, format=3, entries_file=f"{CHUNKS}/three.parquet",
        entries_rows=1)
    led = Ledger.load(str(tmp_path))
    assert [r.format for r in led.records] == [1, 2, 3]
    assert [r.files for r in led.records] == [1, 1, 1]
    assert led.entries.select(["path", "seq", "part"]).to_pylist() == [
        {"path": "a/1.npy", "seq": 1, "part": None}, {"path": "a/2.npy", "seq": 2, "part": None},
        {"path": "a/3.npy", "seq": 3, "part": "p"}]
    raw(3, "three", lease=None, format=3, entries_file=f"{CHUNKS}/three.parquet",
        entries_rows=2)
    with pytest.raises(LedgerDamaged, match="three.parquet has 1 rows, its commit 3 says 2"):
        Ledger.load(str(tmp_path))
    raw(3, "three", lease=None, format=3, entries_file=f"{CHUNKS}/three.parquet",
        entries_rows=1)
    raw(4, "four", lease=None, format=5, shards=["x"])
    with pytest.raises(NewerFormat, match=r"c-0000000004-four.json has record format 5, "
                                          r"newer than this posebatch reads \(up to 4\)"):
        Ledger.load(str(tmp_path))
