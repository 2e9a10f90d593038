"""A run with nothing to do is done without Prefect, and only when nothing needs the flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.classify.idle import idle_run
from tasks.classify.ledger import CommitRecord, Ledger, LockHeld, OutputLock
from tests.support.classify_support import good_frames, npy_bytes, write


def idle(inp: Path, out: Path, move: str | None = None):
    return idle_run(str(inp), str(out), quiet_seconds=0, exclude=(), move_processed=move,
                    fold_at=16, compact_above=32, model_version="v0001")


def known(out: Path, f: Path, rel: str, part: str | None = None) -> None:
    st = f.stat()
    entry = {"path": rel, "sha256": "s", "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "status": "classified", "reason": None, "detail": None, "frames": 1}
    if part:
        entry["part"] = part
    Ledger.load(str(out)).commit(CommitRecord(seq=0, commit_id="c1", entries=[entry]))


def test_nothing_new_is_a_summary_and_anything_for_the_flow_is_none(tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    empty = idle(inp, out)
    assert empty is not None and empty["ok"] and empty["flow_run_id"] is None
    assert (empty["files_seen"], empty["classified"], empty["backlog"]["files"]) == (0, 0, 0)
    f = write(inp / "b1" / "x.npy", npy_bytes(good_frames(1)))
    assert idle(inp, out) is None                                   # new: the flow's work
    known(out, f, "b1/x.npy")
    again = idle(inp, out)
    assert again is not None and again["already_processed"] == 1 and again["new"] == 0
    assert idle(inp, out, move=str(tmp_path / "archive")) is None   # a known file to move


def test_a_lost_part_or_a_held_lock_is_never_idle(tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    f = write(inp / "b1" / "x.npy", npy_bytes(good_frames(1)))
    known(out, f, "b1/x.npy", part="predictions/date=2026-11-30/part-gone.parquet")
    assert idle(inp, out) is None          # the flow restores the part's files
    with OutputLock(str(out)), pytest.raises(LockHeld):
        idle(inp, out)
