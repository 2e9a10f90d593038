"""The CLI's preload hint: TensorFlow is loaded ahead only when discovery finds new files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from flows.cli.classify import anything_new
from tasks.classify.ledger import CommitRecord, Ledger
from tests.support.classify_support import good_frames, npy_bytes, write


def _params(inp: Path, out: Path, quiet: float | None = 5.0) -> dict:
    return {"input_dir": str(inp), "output_dir": str(out), "quiet_seconds": quiet,
            "move_processed": None, "data_root": str(inp.parent)}


def test_anything_new_follows_discovery_and_the_ledger(tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    assert not anything_new(_params(inp, out))                 # empty input
    f = inp / "b1" / "x.npy"
    write(f, npy_bytes(good_frames(1)))
    assert not anything_new(_params(inp, out))                 # batch still quiet-pending
    (inp / "b1" / "_SUCCESS").touch()
    assert anything_new(_params(inp, out))                     # complete, never processed
    st = f.stat()
    Ledger.load(str(out)).commit(CommitRecord(seq=0, commit_id="c1", entries=[{
        "path": "b1/x.npy", "sha256": "s", "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "status": "classified", "reason": None, "detail": None, "frames": 1}]))
    assert not anything_new(_params(inp, out))                 # known by path, size, mtime
    later = time.time_ns() + 10**9
    os.utime(f, ns=(later, later))
    assert anything_new(_params(inp, out))                     # touched: read again


def test_anything_new_skips_the_output_inside_the_input_and_errs_towards_loading(
        tmp_path: Path):
    inp = tmp_path / "in"
    write(inp / "out" / "b" / "y.npy", npy_bytes(good_frames(1)))  # the output's own folder
    assert not anything_new(_params(inp, inp / "out", quiet=0))
    assert anything_new({"input_dir": str(inp)})  # malformed: unknown means "load"
