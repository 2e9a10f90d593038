"""Re-scoring's pure rules: which files a version still has to score, where their inputs are,
and how each read file is judged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.classify.infer import ChunkResult, FileOutcome
from tasks.classify.ledger import ENTRY_SCHEMA, Ledger
from tasks.classify.rescore import Target, judge, locate, plan, scored_by


def entries(rows: list[tuple[str, str, str, str, str]]) -> pa.Table:
    """(path, sha, status, model_version, committed_at day) -> ledger entries."""
    cols = {f: [] for f in ENTRY_SCHEMA.names}
    for path, sha, status, version, day in rows:
        for f, v in (("path", path), ("sha256", sha), ("size", 10), ("mtime_ns", 1),
                     ("status", status), ("reason", None), ("detail", None), ("frames", 2),
                     ("seq", 1), ("commit_id", "c"), ("part", "p"),
                     ("committed_at", f"{day}T10:00:00+00:00"), ("model_version", version),
                     ("flow_run_id", None)):
            cols[f].append(v)
    return pa.table(cols, schema=ENTRY_SCHEMA)


LEDGER = entries([
    ("b1/a.npy", "A", "classified", "v1", "2026-11-01"),
    ("b1/b.npy", "B", "classified", "v1", "2026-11-02"),
    ("b2/c.npy", "C", "classified", "v1", "2026-11-03"),
    ("b2/copy.npy", "C", "duplicate", "v1", "2026-11-03"),   # no rows of its own
    ("b2/bad.npy", "X", "rejected", "v1", "2026-11-03"),
    ("b1/b.npy", "B", "rescored", "v2", "2026-11-05"),        # v2 scored B already
])


def test_plan_takes_classified_files_the_version_has_not_scored_and_counts_the_rest():
    todo, already = plan(LEDGER, "v2")
    assert [t.path for t in todo] == ["b1/a.npy", "b2/c.npy"] and already == 1
    assert plan(LEDGER, "v1") == ([], 3)            # v1 classified all three
    assert scored_by(LEDGER, "v2") == {"B"}


def test_plan_filters_by_day_batch_path_and_chosen_pairs():
    assert [t.path for t in plan(LEDGER, "v3", since="2026-11-02")[0]] == ["b1/b.npy", "b2/c.npy"]
    assert [t.path for t in plan(LEDGER, "v3", until="2026-11-01")[0]] == ["b1/a.npy"]
    assert [t.path for t in plan(LEDGER, "v3", batch="b2")[0]] == ["b2/c.npy"]
    assert [t.path for t in plan(LEDGER, "v3", path="b1/*")[0]] == ["b1/a.npy", "b1/b.npy"]
    assert [t.path for t in plan(LEDGER, "v3", only={("b1/b.npy", "B")})[0]] == ["b1/b.npy"]


def test_locate_finds_the_input_then_the_archive_and_a_renamed_copy_only_by_its_hash(
        tmp_path: Path):
    inp, arc = tmp_path / "in", tmp_path / "archive"
    (inp / "b").mkdir(parents=True)
    (arc / "b").mkdir(parents=True)
    (inp / "b" / "here.npy").write_bytes(b"1")
    (arc / "b" / "moved.npy").write_bytes(b"2")
    (arc / "b" / "renamed.123.npy").write_bytes(b"3")
    (arc / "b" / "other.123.npy").write_bytes(b"x")    # same stem pattern, wrong content
    sha = {k: hashlib.sha256(k.encode()).hexdigest() for k in "123"}
    want = [Target("b/here.npy", sha["1"], 1, 1, 0), Target("b/moved.npy", sha["2"], 1, 1, 0),
            Target("b/renamed.npy", sha["3"], 1, 1, 0),
            Target("b/other.npy", sha["1"], 1, 1, 0), Target("b/gone.npy", "?", 1, 1, 0)]
    found, missing = locate(want, str(inp), str(arc))
    assert [(t.path, t.base, t.rel) for t in found] == [
        ("b/here.npy", str(inp), "b/here.npy"), ("b/moved.npy", str(arc), "b/moved.npy"),
        ("b/renamed.npy", str(arc), "b/renamed.123.npy")]
    assert [t.path for t in missing] == ["b/other.npy", "b/gone.npy"]


def test_judge_rescores_only_the_recorded_content_once_and_names_the_rest(tmp_path: Path):
    targets = {rel: Target(f"orig/{rel}", sha, 1, 1, 0, "arc", rel)
               for rel, sha in (("ok.npy", "A"), ("changed.npy", "B"), ("done.npy", "D"),
                                ("bad.npy", "E"), ("gone.npy", "F"))}
    files = [FileOutcome("ok.npy", "A", 1), FileOutcome("changed.npy", "Z", 1),
             FileOutcome("done.npy", "D", 1), FileOutcome("bad.npy", "E", 0, reason="shape"),
             FileOutcome("gone.npy", skipped="unreadable")]
    result = ChunkResult(files, np.zeros(1, np.int32), np.zeros(1, np.int32),
                         np.full((1, 2), 0.5, np.float32), ["a", "b"], "v2")
    ledger = Ledger(str(tmp_path))
    ledger.entries = entries([("orig/done.npy", "D", "rescored", "v2", "2026-11-05")])
    judged, report = judge(result, targets, ledger, "v2")
    assert judged.status == ["rescored", None, None, None, None]
    assert [f.path for f in judged.result.files][0] == "orig/ok.npy"   # the rows' own path
    assert report == {"changed": ["orig/changed.npy"], "rejected": ["orig/bad.npy"],
                      "unreadable": ["orig/gone.npy"], "already": ["orig/done.npy"]}


def test_entries_from_before_versions_were_recorded_count_as_scored_when_asked():
    legacy = entries([("b1/old.npy", "O", "classified", None, "2026-10-01"),
                      ("b1/new.npy", "N", "classified", "v1", "2026-11-01")])
    assert [t.path for t in plan(legacy, "v1")[0]] == ["b1/old.npy"]
    assert plan(legacy, "v1", legacy_scored=True) == ([], 2)   # no duplicate, ever


def test_a_path_claimed_by_two_contents_is_settled_by_hash(tmp_path: Path):
    """A file rewritten in place (content A classified, then B): the input holds B, the
    archive a renamed copy of A; each target gets its own bytes, none is dropped."""
    inp, arc = tmp_path / "in", tmp_path / "archive"
    (inp / "b").mkdir(parents=True)
    (arc / "b").mkdir(parents=True)
    (inp / "b" / "x.npy").write_bytes(b"B")
    (arc / "b" / "x.111.npy").write_bytes(b"A")
    sha = {k: hashlib.sha256(k.encode()).hexdigest() for k in "AB"}
    found, missing = locate([Target("b/x.npy", sha["A"], 1, 1, 0),
                             Target("b/x.npy", sha["B"], 1, 1, 0)], str(inp), str(arc))
    assert sorted((t.sha256 == sha["A"], t.base, t.rel) for t in found) == [
        (False, str(inp), "b/x.npy"), (True, str(arc), "b/x.111.npy")]
    assert missing == []
