"""Each file's part in the ledger, ``verify``, ``forget`` and the recovery of lost parts, and
that a commit fsyncs every folder it creates."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from tasks.classify.infer import ChunkResult, FileOutcome
from tasks.classify.ledger import Ledger
from tasks.classify.ledger import files as ledger_files
from tasks.classify.outputs import commit_chunk, compact, judge_chunk, list_parts
from tasks.classify.verify import forget, recover_lost, select, verify
from tests.support.classify_support import good_frames, npy_bytes, write

NAMES = ["a", "b", "c"]


def chunk_of(files: dict[str, bytes | None], frames: dict[str, int]) -> ChunkResult:
    """A chunk over real contents (sha256 of the bytes); ``None`` bytes: a rejected file."""
    outcomes, fidx, fr = [], [], []
    for i, (path, data) in enumerate(files.items()):
        sha = hashlib.sha256(data or path.encode()).hexdigest()
        if data is None:
            outcomes.append(FileOutcome(path, sha256=sha, reason="not_npy", detail="why"))
            continue
        n = frames.get(path, 1)
        outcomes.append(FileOutcome(path, sha256=sha, frames=n, warnings=[[]] * n))
        fidx += [i] * n
        fr += list(range(n))
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=len(fidx)).astype(np.float32)
    return ChunkResult(outcomes, np.array(fidx, np.int32), np.array(fr, np.int32), p, NAMES,
                       "v0001")


def commit(led: Ledger, files: dict[str, bytes | None], cid: str,
           frames: dict[str, int] | None = None):
    record, _ = commit_chunk(led, judge_chunk(chunk_of(files, frames or {}), led), {}, cid,
                             "run-1")
    return record


def rows(out: Path) -> list[tuple[str, int]]:
    t = ds.dataset(out / "predictions", partitioning="hive").to_table()
    return sorted(zip(t["source_path"].to_pylist(), t["frame_index"].to_pylist(), strict=True))


def test_verify_finds_a_deleted_and_a_damaged_part_even_after_folding(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    r1 = commit(led, {"b/1.npy": b"one", "b/2.npy": None}, "c1", {"b/1.npy": 3})
    r2 = commit(led, {"b/3.npy": b"three"}, "c2")
    r3 = commit(led, {"b/4.npy": b"four"}, "c3")
    led.fold()                           # records gone: segments must still know the parts
    fresh = Ledger.load(str(tmp_path))
    assert verify(fresh).problems == []
    by_path = dict(zip(fresh.entries["path"].to_pylist(), fresh.entries["part"].to_pylist(),
                       strict=True))
    assert by_path["b/1.npy"] == r1.parts[0].final and by_path["b/2.npy"] == r1.parts[1].final
    assert fresh.entries["model_version"].to_pylist() == ["v0001"] * 4
    os.unlink(tmp_path / r2.parts[0].final)
    (tmp_path / r3.parts[0].final).write_bytes(b"not parquet")
    verdict = verify(Ledger.load(str(tmp_path)))
    assert verdict.missing == [r2.parts[0].final]
    assert verdict.unreadable == [r3.parts[0].final]
    assert len(verdict.problems) == 2 and all("\n" not in p for p in verdict.problems)


def test_compaction_points_entries_at_the_merged_part_and_survives_a_reload(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    for k in range(4):
        commit(led, {f"b/{k}.npy": f"c{k}".encode()}, f"k{k}", {f"b/{k}.npy": 2})
    led.fold()
    compact(led)
    (merged,) = next(iter(list_parts(led.loc, "predictions").values()))
    assert set(led.entries["part"].to_pylist()) == {merged}
    again = Ledger.load(str(tmp_path))      # the compaction record's moves, not folded yet
    assert set(again.entries["part"].to_pylist()) == {merged}
    again.fold()                              # folded: the moves are merged into one segment
    third = Ledger.load(str(tmp_path))
    assert set(third.entries["part"].to_pylist()) == {merged}
    assert verify(third).problems == []


def test_forget_removes_the_rows_and_makes_the_file_and_its_copies_new(tmp_path: Path):
    led = Ledger.load(str(tmp_path))
    commit(led, {"b/1.npy": b"one", "b/2.npy": b"two"}, "c1", {"b/1.npy": 2})
    commit(led, {"c/copy.npy": b"one", "c/3.npy": b"three"}, "c2")   # copy.npy: a duplicate
    before = rows(tmp_path)
    stats = forget(led, select(led.entries, "b/1*"), "on purpose")
    assert stats["files"] == 2 and stats["rows_removed"] == 2 and stats["parts_rewritten"] == 1
    assert rows(tmp_path) == [r for r in before if r[0] != "b/1.npy"]
    for fresh in (led, Ledger.load(str(tmp_path))):
        assert sorted(fresh.entries["path"].to_pylist()) == ["b/2.npy", "c/3.npy"]
        assert verify(fresh).problems == []
    fresh.fold()
    fresh = Ledger.load(str(tmp_path))
    assert sorted(fresh.entries["path"].to_pylist()) == ["b/2.npy", "c/3.npy"]
    # Classified again: each frame once, the copy recognised again.
    commit(fresh, {"b/1.npy": b"one", "c/copy.npy": b"one"}, "c3", {"b/1.npy": 2})
    assert rows(tmp_path) == before
    assert verify(Ledger.load(str(tmp_path))).problems == []
    assert select(fresh.entries, batch="c")["path"].to_pylist() == ["c/3.npy", "c/copy.npy"]


def test_recover_lost_forgets_the_files_of_a_lost_part_and_names_what_cannot_come_back(
        tmp_path: Path):
    inp, out, archive = tmp_path / "in", tmp_path / "out", tmp_path / "archive"
    data = {f"b/{k}.npy": npy_bytes(good_frames(1, seed=k)) for k in range(4)}
    for rel, blob in data.items():
        write(inp / rel, blob)
    led = Ledger.load(str(out))
    commit(led, {k: data[k] for k in ("b/0.npy", "b/1.npy")}, "c1")
    lost = commit(led, {k: data[k] for k in ("b/2.npy", "b/3.npy")}, "c2", {"b/3.npy": 5})
    led.fold()
    assert recover_lost(Ledger.load(str(out)), str(inp))["lost_parts"] == 0
    os.unlink(out / lost.parts[0].final)
    write(archive / "b/3.npy", data["b/3.npy"])       # moved out of the input earlier
    (inp / "b/3.npy").unlink()
    led = Ledger.load(str(out))
    res = recover_lost(led, str(inp), str(archive))
    assert (res["lost_parts"], res["restorable"], res["unrestorable"]) == (1, 1, 1)
    assert res["unrestorable_frames"] == 5 and res["in_archive"] == 1
    assert "b/3.npy" in res["message"] and str(archive) in res["message"]
    assert "\n" not in res["message"]
    for fresh in (led, Ledger.load(str(out))):        # durable: both files are new again
        assert sorted(fresh.entries["path"].to_pylist()) == ["b/0.npy", "b/1.npy"]
        assert verify(fresh).problems == []
    assert recover_lost(Ledger.load(str(out)), str(inp))["lost_parts"] == 0


def test_a_commit_fsyncs_every_folder_it_creates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    synced: list[str] = []
    real = ledger_files._fsync_dir
    monkeypatch.setattr(ledger_files, "_fsync_dir",
                        lambda loc, rel: (synced.append(rel.strip("/")), real(loc, rel))[1])
    led = Ledger.load(str(tmp_path))
    record = commit(led, {"b/1.npy": b"one"}, "c1")
    day = record.parts[0].final.rsplit("/", 1)[0]                     # predictions/date=...
    for folder in ("", "predictions", day, "_posebatch", "_posebatch/staging",
                   "_posebatch/ledger", "_posebatch/ledger/commits"):
        assert folder in synced, folder


def test_a_storage_error_is_raised_never_taken_for_a_damaged_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A network or permission error reading a part says nothing about the part: recovery
    must not forget its rows (it would delete intact data)."""
    import tasks.classify.verify as verify_mod

    led = Ledger.load(str(tmp_path))
    commit(led, {"b/1.npy": b"one"}, "c1")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(verify_mod.pq, "read_metadata", denied)
    with pytest.raises(PermissionError):
        recover_lost(Ledger.load(str(tmp_path)), str(tmp_path / "in"))
    monkeypatch.undo()
    assert rows(tmp_path) == [("b/1.npy", 0)] and verify(Ledger.load(str(tmp_path))).problems == []


def test_a_lost_rescored_part_forgets_only_that_version(tmp_path: Path):
    """v0002's re-scored rows of a file are lost: only they are forgotten (rescore redoes
    them); the file's classified rows and entry stay."""
    import dataclasses

    from tasks.classify.rescore import Target, judge, plan

    led = Ledger.load(str(tmp_path))
    commit(led, {"b/1.npy": b"one", "b/2.npy": b"two"}, "c1")
    result = dataclasses.replace(chunk_of({"b/1.npy": b"one"}, {}), model_version="v0002")
    sha = result.files[0].sha256
    judged, _ = judge(result, {"b/1.npy": Target("b/1.npy", sha, 1, 0, 0)}, led, "v0002")
    record, _ = commit_chunk(led, judged, {}, "c2", "run-2", lineage={"run_kind": "rescore"})
    os.unlink(tmp_path / record.parts[0].final)
    out = recover_lost(Ledger.load(str(tmp_path)), str(tmp_path / "in"))
    assert (out["lost_parts"], out["rescored_lost"], out["unrestorable"]) == (1, 1, 0)
    after = Ledger.load(str(tmp_path))
    assert sorted(zip(after.entries["path"].to_pylist(), after.entries["status"].to_pylist(),
                      strict=True)) == [("b/1.npy", "classified"), ("b/2.npy", "classified")]
    assert rows(tmp_path) == [("b/1.npy", 0), ("b/2.npy", 0)]
    assert [t.path for t in plan(after.entries, "v0002")[0]] == ["b/1.npy", "b/2.npy"]
    assert verify(after).problems == []
