"""A run with nothing to do is done without Prefect, and only when nothing needs the flow;
the same check tells whether the flow will need the model (the CLI's preload hint)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tasks.classify.discover import excluded_folders
from tasks.classify.idle import idle_run
from tasks.classify.ledger import CommitRecord, Ledger, LockHeld, OutputLock
from tests.support.classify_support import good_frames, npy_bytes, write


def idle(inp: Path, out: Path, move: str | None = None, quiet: float = 0):
    return idle_run(str(inp), str(out), quiet_seconds=quiet,
                    exclude=excluded_folders(str(inp), str(out), move), move_processed=move,
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
    empty = idle(inp, out).summary
    assert empty is not None and empty["ok"] and empty["flow_run_id"] is None
    assert (empty["files_seen"], empty["classified"], empty["backlog"]["files"]) == (0, 0, 0)
    f = write(inp / "b1" / "x.npy", npy_bytes(good_frames(1)))
    new = idle(inp, out)
    assert new.summary is None and new.needs_model                  # new: classify it
    known(out, f, "b1/x.npy")
    again = idle(inp, out).summary
    assert again is not None and again["already_processed"] == 1 and again["new"] == 0
    move = idle(inp, out, move=str(tmp_path / "archive"))           # a known file to move
    assert move.summary is None and not move.needs_model            # no model for that


def test_the_model_is_needed_only_for_complete_files_the_ledger_does_not_know(tmp_path: Path):
    """What the CLI's preload follows: discovery's readiness rule and the ledger's
    (path, size, mtime) match, the output inside the input never scanned."""
    inp, out = tmp_path / "in", tmp_path / "out"
    f = write(inp / "b1" / "x.npy", npy_bytes(good_frames(1)))
    assert idle(inp, out, quiet=5.0).summary is not None           # batch still quiet-pending
    (inp / "b1" / "_SUCCESS").touch()
    assert idle(inp, out, quiet=5.0).needs_model                   # complete, never processed
    known(out, f, "b1/x.npy")
    assert idle(inp, out, quiet=5.0).summary is not None           # known by path, size, mtime
    later = time.time_ns() + 10**9
    os.utime(f, ns=(later, later))
    assert idle(inp, out, quiet=0).needs_model                     # touched: read again
    inner = tmp_path / "in2"
    write(inner / "out" / "b" / "y.npy", npy_bytes(good_frames(1)))  # the output's own folder
    assert idle(inner, inner / "out").summary is not None


def test_a_lost_part_or_a_held_lock_is_never_idle(tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    f = write(inp / "b1" / "x.npy", npy_bytes(good_frames(1)))
    known(out, f, "b1/x.npy", part="predictions/date=2026-11-30/part-gone.parquet")
    lost = idle(inp, out)
    assert lost.summary is None and lost.needs_model  # the flow restores the part's files
    with OutputLock(str(out)), pytest.raises(LockHeld):
        idle(inp, out)
