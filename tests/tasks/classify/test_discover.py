"""Discovery: the readiness rule, ignored names, order, and what counts as already known."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tasks.classify.discover import Listed, readiness, scan_input, unseen
from tasks.classify.ledger import ENTRY_SCHEMA
from tests.support.classify_support import good_frames, make_input, npy_bytes, write

NOW = 1_000_000.0
S = 1_000_000_000  # ns per second


def entry(path: str, age: float, is_dir: bool = False, size: int = 10) -> Listed:
    return Listed(path, 0 if is_dir else size, int((NOW - age) * S), is_dir)


def test_marker_makes_a_fresh_batch_ready_and_quiet_time_makes_an_unmarked_one_ready():
    entries = [
        entry("a", 0.1, is_dir=True), entry("a/x.npy", 0.1), entry("a/_SUCCESS", 0.1),
        entry("b", 1.0, is_dir=True), entry("b/y.npy", 1.0),          # still being written
        entry("c", 60, is_dir=True), entry("c/z.npy", 60),            # quiet for a minute
    ]
    scan = readiness(entries, quiet_seconds=5, now=NOW)
    assert [c.path for c in scan.ready] == ["a/x.npy", "c/z.npy"]
    assert [c.path for c in scan.waiting] == ["b/y.npy"]
    assert scan.waiting_batches == ["b"]
    later = readiness(entries, quiet_seconds=5, now=NOW + 10)
    assert [c.path for c in later.ready] == ["a/x.npy", "b/y.npy", "c/z.npy"]


def test_any_recent_activity_in_a_batch_keeps_all_of_it_waiting():
    # Old files, but a sub-folder, a writer's hidden temp file or the folder itself changed.
    for recent in (entry("b/sub", 1, is_dir=True), entry("b/.part.npy.tmp", 1),
                   entry("b", 1, is_dir=True)):
        entries = [entry("b", 100, is_dir=True), entry("b/old.npy", 100),
                   entry("b/sub", 100, is_dir=True), entry("b/sub/deep.npy", 100)]
        entries = [e for e in entries if e.path != recent.path] + [recent]
        scan = readiness(entries, quiet_seconds=5, now=NOW)
        assert scan.ready == [], recent
        assert [c.path for c in scan.waiting] == ["b/old.npy", "b/sub/deep.npy"]


def test_root_files_follow_their_own_time_and_hidden_or_foreign_names_are_ignored():
    entries = [entry("old.npy", 30), entry("new.npy", 1), entry(".hidden.npy", 30),
               entry("_tmp", 30, is_dir=True), entry("_tmp/x.npy", 30), entry("notes.txt", 30),
               entry("d", 30, is_dir=True), entry("d/.cache", 30, is_dir=True),
               entry("d/.cache/k.npy", 30), entry("d/ok.npy", 30), entry("d/ok.NPZ", 30),
               entry("out", 30, is_dir=True), entry("out/p.npy", 30)]
    scan = readiness(entries, quiet_seconds=5, now=NOW, exclude=("out",))
    assert [c.path for c in scan.ready] == ["d/ok.npy", "old.npy"]
    assert [c.path for c in scan.waiting] == ["new.npy"]
    assert scan.waiting_batches == [""]
    assert {c.batch for c in scan.ready} == {"d", ""}


def test_order_is_by_path_whatever_the_listing_order():
    names = ["b2/z.npy", "a1/y.npy", "b2/a.npy", "a1/sub/x.npy", "c.npy"]
    listing = [entry(n, 50) for n in names]
    forward = readiness(listing, 5, NOW)
    backward = readiness(list(reversed(listing)), 5, NOW)
    assert [c.path for c in forward.ready] == sorted(names)
    assert forward.ready == backward.ready


def test_scan_input_on_generated_batches_and_a_half_written_one(tmp_path: Path):
    inp = make_input(tmp_path, batches=2, per_batch=5)
    write(inp / "batch_009" / "first.npy", npy_bytes(good_frames(1)))  # no marker, just now
    scan = scan_input(str(inp), quiet_seconds=30)
    assert len(scan.ready) == 10
    assert {c.batch for c in scan.ready} == {"batch_000", "batch_001"}
    assert [c.path for c in scan.waiting] == ["batch_009/first.npy"]
    assert all(c.size == (inp / c.path).stat().st_size for c in scan.ready)
    # Once quiet (time passes), the unmarked batch is taken too.
    later = scan_input(str(inp), quiet_seconds=30, now=time.time() + 60)
    assert "batch_009/first.npy" in [c.path for c in later.ready]


def test_known_files_are_matched_by_path_size_and_mtime(tmp_path: Path):
    import pyarrow as pa

    inp = make_input(tmp_path, batches=1, per_batch=4)
    ready = scan_input(str(inp), quiet_seconds=0).ready
    known = pa.table({"path": [c.path for c in ready[:3]], "sha256": ["x"] * 3,
                      "size": [c.size for c in ready[:3]],
                      "mtime_ns": [c.mtime_ns for c in ready[:3]],
                      "status": ["classified"] * 3, "reason": [None] * 3, "detail": [None] * 3,
                      "frames": [1] * 3, "seq": [1] * 3, "commit_id": ["c"] * 3,
                      **{f: [None] * 3 for f in ("part", "committed_at", "model_version",
                                                 "flow_run_id")}},
                     schema=ENTRY_SCHEMA)
    fresh, old = unseen(ready, known)
    assert [c.path for c in fresh] == [ready[3].path]
    assert [c.path for c in old] == [c.path for c in ready[:3]]
    # Touching a known file (new mtime) makes it a candidate again: its content decides.
    os.utime(inp / ready[0].path, (time.time() + 5, time.time() + 5))
    fresh2, _ = unseen(scan_input(str(inp), quiet_seconds=0).ready, known)
    assert {c.path for c in fresh2} == {ready[0].path, ready[3].path}
    assert unseen(ready, ENTRY_SCHEMA.empty_table())[0] == ready


def test_chunks_hold_at_most_the_files_and_bytes_asked_and_keep_the_order():
    from tasks.classify.discover import Candidate, plan_chunks

    files = [Candidate(f"b/{i}.npy", "b", size, 0) for i, size in enumerate([4, 4, 4, 9, 1, 1])]
    chunks = plan_chunks(files, max_files=2, max_bytes=8)
    assert [[c.size for c in ch] for ch in chunks] == [[4, 4], [4], [9], [1, 1]]
    assert [c.path for ch in chunks for c in ch] == [c.path for c in files]
    assert plan_chunks([], 2, 8) == []


def test_a_capped_run_takes_the_oldest_batches_first_and_reports_the_backlog():
    from tasks.classify.discover import Candidate, backlog, take

    h = 3600 * S
    files = [Candidate("new/a.npy", "new", 10, 50 * h), Candidate("old/b.npy", "old", 10, 1 * h),
             Candidate("old/a.npy", "old", 10, 2 * h), Candidate("mid/a.npy", "mid", 30, 9 * h)]
    todo, left = take(files, max_files=None, max_bytes=25)
    assert [c.path for c in todo] == ["old/a.npy", "old/b.npy"]      # oldest batch, in path order
    assert [c.path for c in left] == ["mid/a.npy", "new/a.npy"]
    assert backlog(left, now=60 * 3600) == {"files": 2, "bytes": 40, "oldest_batch": "mid",
                                            "oldest_age_hours": 51.0}
    assert [c.path for c in take(files, 1, None)[0]] == ["old/a.npy"]
    assert [c.path for c in take(files, None, 1)[0]] == ["old/a.npy"]   # never zero files
    assert backlog([])["files"] == 0
