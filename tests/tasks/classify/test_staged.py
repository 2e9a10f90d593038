"""Worker-side writes (tasks/classify/staged.py): a worker stages a chunk's parts and hands
back no rows; the flow commits them through the ledger exactly once, rewrites them when the
ledger already knows some files, and reconcile drops a chunk that was never committed.
Checked on a local output and on ``s3://`` (the session's moto server)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pyarrow.dataset as ds
import pytest

from tasks.classify.ledger import CHUNKS, COMMITS, STAGING, Ledger
from tasks.classify.outputs import commit_chunk, judge_chunk
from tasks.classify.staged import commit_staged, commit_staged_group, stage_chunk
from tasks.classify.tally import RunTally, chunk_stats
from tasks.io.storage import Location
from tasks.monitor.predictions import PredictionStats
from tests.tasks.classify.test_outputs import NAMES, chunk


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return f"s3://{request.getfixturevalue('s3_bucket')}/out"


def _rows(out: str, name: str = "predictions") -> list[tuple]:
    loc = Location(out)
    table = ds.dataset(loc.path(name), filesystem=loc.fs, format="parquet",
                       partitioning="hive").to_table()
    return sorted(zip(table.column("source_path").to_pylist(),
                      table.column("frame_index").to_pylist(), strict=True))


def test_staged_chunks_commit_the_same_rows_and_stats_as_the_flow_writing_them(out: str):
    res = chunk(["b/x.npy", "b/y.npy", "b/z.npy"], [2, 3, 1], bad={"b/z.npy": "bad_shape"})
    staged = stage_chunk(out, "c1", res, "run-1", {"run_kind": "classify"}, 0.5)
    wire = pickle.dumps(staged)
    # What crosses to the flow grows by the report's 16 bytes a frame, not by the rows
    # (C probabilities, indices and warnings: with the 17 real classes over 80 bytes).
    sizes = {}
    for frames in (100, 200):
        res_n = chunk([f"b/{i}.npy" for i in range(20)], [frames] * 20)
        staged_n = stage_chunk(out + f"-{frames}", "c9", res_n, "run-1", None, 0.5)
        sizes[frames] = len(pickle.dumps(staged_n)), len(pickle.dumps(res_n))
    per_frame = [(sizes[200][k] - sizes[100][k]) / 2000 for k in (0, 1)]
    assert per_frame[0] < 18 < per_frame[1], per_frame
    assert staged.rows == {"predictions": 5, "rejections": 1}
    assert all(size > 0 for size in staged.bytes.values())
    led = Ledger.load(out)
    record, stats = commit_staged(led, pickle.loads(wire), {}, "run-1", 0.5)
    # one record for the chunk, naming the entries object the worker wrote (format 3)
    assert len(record.parts) == 2 and record.entries == [] and record.entries_rows == 3
    assert Ledger.load(out).entries.column("status").to_pylist() == [
        "classified", "classified", "rejected"]
    assert _rows(out) == [("b/x.npy", 0), ("b/x.npy", 1), ("b/y.npy", 0), ("b/y.npy", 1),
                          ("b/y.npy", 2)]
    rejected = ds.dataset(Location(out).path("rejections"), filesystem=Location(out).fs,
                          partitioning="hive").to_table()
    assert rejected.column("source_path").to_pylist() == ["b/z.npy"]
    assert not [f for f in Location(out).list_files() if f.path.startswith(STAGING)]

    # the same chunk committed the old way gives the same counts and monitoring numbers
    other = str(out) + "-flow"
    flow_led = Ledger.load(other)
    flow_judged = judge_chunk(res, flow_led)
    _, tables = commit_chunk(flow_led, flow_judged, {}, "c1", "run-1")
    a, b = RunTally(), RunTally()
    a.predictions, b.predictions = PredictionStats(NAMES, 0.5), PredictionStats(NAMES, 0.5)
    a.add(stats, 2)
    b.add(chunk_stats(flow_judged, flow_led, tables["predictions"]), 2)
    assert a.counters == b.counters and a.frames == b.frames == 5
    assert a.predictions.summary() == b.predictions.summary()
    assert (a.predictions.confusion == b.predictions.confusion).all()
    assert a.kept.table().num_rows == b.kept.table().num_rows == 5


def test_files_the_ledger_knows_are_cut_from_staged_parts_before_the_commit(out: str):
    led = Ledger.load(out)
    first = chunk(["b/x.npy"], [2])
    commit_staged(led, stage_chunk(out, "c1", first, None, None, 0.5), {}, None, 0.5)
    again = chunk(["b/x-copy.npy", "b/new.npy"], [2, 1])
    again.files[0].sha256 = first.files[0].sha256      # the same content under a new path
    record, stats = commit_staged(
        led, stage_chunk(out, "c2", again, None, None, 0.5), {}, None, 0.5)
    assert stats["status"] == {"duplicate": 1, "classified": 1} and stats["frames"] == 1
    assert [e["status"] for e in record.entries] == ["duplicate", "classified"]
    assert _chunk_objects(out) == ["c1"]    # c2's entries are inline: its object is gone
    assert _rows(out) == [("b/new.npy", 0), ("b/x.npy", 0), ("b/x.npy", 1)]
    assert Ledger.load(out).last_seq == 2


def test_a_staged_chunk_never_committed_is_removed_by_reconcile(out: str):
    stage_chunk(out, "lost", chunk(["b/x.npy"], [1]), None, None, 0.5)
    assert [f for f in Location(out).list_files() if f.path.startswith(STAGING)]
    assert _chunk_objects(out) == ["lost"]
    led = Ledger.load(out)
    assert led.entries.num_rows == 0           # an object no record names is not read
    assert led.reconcile()["discarded_staging"] == 1
    assert not [f for f in Location(out).list_files() if f.path.startswith(STAGING)]
    assert not led.records and _chunk_objects(out) == []


def test_a_chunk_record_folds_into_a_segment_and_its_object_goes(out: str):
    led = Ledger.load(out)
    led.finalize_in_background()       # as the flow on s3://; fold waits for the parts
    sizes = {"b/x.npy": (11, 5), "b/y.npy": (12, 6)}
    staged = stage_chunk(out, "c1", chunk(["b/x.npy", "b/y.npy"], [1, 2]), None, None, 0.5,
                         sizes)
    record, _ = commit_staged(led, staged, {}, None, 0.5)
    led.flush()
    assert _rows(out) == [("b/x.npy", 0), ("b/y.npy", 0), ("b/y.npy", 1)]
    assert not [f for f in Location(out).list_files() if f.path.startswith(STAGING)]
    before = Ledger.load(out).entries
    assert before.select(["path", "size", "mtime_ns", "frames", "seq"]).to_pylist() == [
        {"path": "b/x.npy", "size": 11, "mtime_ns": 5, "frames": 1, "seq": 1},
        {"path": "b/y.npy", "size": 12, "mtime_ns": 6, "frames": 2, "seq": 1}]
    assert before.column("part").to_pylist() == [record.parts[0].final] * 2
    assert led.entries.equals(before)      # rebuilt in the flow from the wire: the same rows
    assert led.fold() == 1 and _chunk_objects(out) == []
    assert Ledger.load(out).entries.equals(before)


def _record_files(out: str) -> list[str]:
    return sorted(f.path.rsplit("/", 1)[-1] for f in Location(out).list_files()
                  if f.path.startswith(COMMITS))


def test_chunks_ready_together_commit_with_one_record_each_file_once(out: str):
    """Group commit: consecutive all-new chunks share one record file (one PUT); a chunk
    holding content the ledger or the group already has ends the group and is judged
    alone; a retry commits nothing twice; the group reads back and folds like records."""
    led = Ledger.load(out)
    commit_staged(led, stage_chunk(out, "c0", chunk(["b/old.npy"], [1]), None, None, 0.5),
                  {}, None, 0.5)
    copy = chunk(["b/e.npy", "b/f.npy"], [1, 1])
    copy.files[0].sha256 = "sha-b/a.npy-0"              # b/a.npy's content, in this group
    staged = [stage_chunk(out, cid, res, "run", None, 0.5) for cid, res in (
        ("c1", chunk(["b/a.npy", "b/b.npy"], [2, 1])), ("c2", chunk(["b/c.npy"], [1])),
        ("c3", copy), ("c4", chunk(["b/g.npy"], [1])), ("c5", chunk(["b/h.npy"], [1])))]
    done = commit_staged_group(led, staged, [{}] * 5, "run", 0.5)
    assert [r.seq for r, _ in done] == [2, 3, 4, 5, 6]
    assert [s["status"] for _, s in done][2] == {"duplicate": 1, "classified": 1}
    assert _record_files(out) == ["c-0000000001-c0.json", "c-0000000002-c1.json",
                                  "c-0000000004-c3.json", "c-0000000005-c4.json"]
    group = json.loads(Location(out).read_bytes(f"{COMMITS}/c-0000000002-c1.json"))
    assert group["format"] == 4 and [r["commit_id"] for r in group["records"]] == ["c1", "c2"]
    assert commit_staged_group(led, staged, [{}] * 5, "run", 0.5)[4][0].seq == 6  # a retry
    again = Ledger.load(out)
    assert again.last_seq == 6 and again.entries.equals(led.entries)
    paths = again.entries.column("path").to_pylist()
    assert sorted(paths) == sorted(set(paths)) and len(paths) == 8
    assert _rows(out) == sorted([("b/a.npy", 0), ("b/a.npy", 1), ("b/b.npy", 0),
                                 ("b/c.npy", 0), ("b/f.npy", 0), ("b/g.npy", 0),
                                 ("b/h.npy", 0), ("b/old.npy", 0)])
    assert not [f for f in Location(out).list_files() if f.path.startswith(STAGING)]
    assert again.fold() == 6 and _record_files(out) == [] and _chunk_objects(out) == []
    assert Ledger.load(out).entries.equals(again.entries)


_KILLED_GROUP = """
import sys
from tasks.classify.ledger import Ledger
from tasks.classify.staged import commit_staged_group, stage_chunk
from tasks.io.faults import arm
from tests.tasks.classify.test_outputs import chunk
out = sys.argv[1]
staged = [stage_chunk(out, f"c{k}", chunk([f"b/{k}-{i}.npy" for i in range(2)], [1, 2]),
                      None, None, 0.5) for k in range(3)]
arm(sys.argv[2])
commit_staged_group(Ledger.load(out), staged, [{}] * 3, None, 0.5)
"""


@pytest.mark.parametrize(("point", "committed"), [("staged", 0), ("finalized:2", 6)])
def test_a_killed_group_commit_is_all_or_nothing_after_reconcile(out: str, point: str,
                                                                 committed: int):
    """SIGKILL before the group's record (nothing committed) or after it, with two of its
    three parts moved (on ``s3://``: copied, staging not yet deleted): after ``reconcile``
    every file of the three chunks is there exactly once, or none, and no staging or
    entries object is left."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    proc = subprocess.run([sys.executable, "-c", _KILLED_GROUP, out, point], cwd=root,
                          env={**os.environ, "PYTHONPATH": root}, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    led = Ledger.load(out)
    led.reconcile()
    paths = led.entries.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == committed
    expected = [(f"b/{k}-{i}.npy", f) for k in range(3) for i in range(2) for f in range(i + 1)]
    if committed:
        assert _rows(out) == sorted(expected)
    else:
        assert not [f for f in Location(out).list_files() if f.path.startswith("predictions")]
    assert not [f for f in Location(out).list_files() if f.path.startswith(STAGING)]
    assert _chunk_objects(out) == (["c0", "c1", "c2"] if committed else [])


def _chunk_objects(out: str) -> list[str]:
    return sorted(f.path.rsplit("/", 1)[-1].removesuffix(".parquet")
                  for f in Location(out).list_files() if f.path.startswith(CHUNKS))
