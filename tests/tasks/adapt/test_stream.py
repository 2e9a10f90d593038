"""Recently classified frames found again by content hash: the window, the bound, the seed,
and files moved, changed or gone (a real ledger, real files, the real archive)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tasks.adapt.stream import recent_unlabeled
from tasks.classify.archive import archive_files, remember_archive
from tests.support.adapt_support import commit_files, write_inputs
from tests.support.classify_support import good_frames, npy_bytes, write

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
FILES = {"b0/old.npy": 3, "b1/a.npy": 4, "b1/b.npy": 2, "b2/c.npy": 5, "root.npy": 1,
         "b3/later.npy": 2}


@pytest.fixture()
def history(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Files classified 10 days, 2 days and 1 hour before NOW, and one after it."""
    inp, out = tmp_path / "in", tmp_path / "out"
    frames = write_inputs(inp, FILES)
    commit_files(inp, out, ["b0/old.npy"], NOW - timedelta(days=10), "c1")
    commit_files(inp, out, ["b1/a.npy", "b1/b.npy"], NOW - timedelta(days=2), "c2")
    commit_files(inp, out, ["b2/c.npy", "root.npy"], NOW - timedelta(hours=1), "c3")
    commit_files(inp, out, ["b3/later.npy"], NOW + timedelta(hours=1), "c4")
    return inp, out, frames


def assert_same_frames(got, frames: dict[str, np.ndarray]) -> None:
    """Each frame returned is the frame written at its (path, index)."""
    for k, (path, i) in enumerate(got.keys):
        np.testing.assert_array_equal(got.frames[k], frames[path][i])


def test_the_window_takes_files_classified_in_the_last_days_before_now(history):
    inp, out, frames = history
    week = recent_unlabeled(str(out), str(inp), days=7, now=NOW)
    assert sorted(set(week.source_path)) == ["b1/a.npy", "b1/b.npy", "b2/c.npy", "root.npy"]
    assert len(week.frames) == 12 and week.frames.dtype == np.float32
    assert week.frames.shape[1:] == (17, 64, 48)
    assert week.keys == sorted(week.keys)               # (path, frame) order
    assert (week.window_files, week.files.considered, week.files.found) == (4, 4, 4)
    assert_same_frames(week, frames)
    day = recent_unlabeled(str(out), str(inp), days=1, now=NOW)
    assert sorted(set(day.source_path)) == ["b2/c.npy", "root.npy"]
    everything = recent_unlabeled(str(out), str(inp), days=30, now=NOW + timedelta(days=1))
    assert len(everything.frames) == sum(FILES.values())
    assert recent_unlabeled(str(out), str(inp), days=7, now=NOW,
                            exclude=["b1", "root.npy"]).source_path == ["b2/c.npy"] * 5


def test_max_frames_bounds_the_sample_and_the_seed_makes_it_repeatable(history):
    inp, out, frames = history
    a = recent_unlabeled(str(out), str(inp), days=7, max_frames=5, seed=3, now=NOW)
    b = recent_unlabeled(str(out), str(inp), days=7, max_frames=5, seed=3, now=NOW)
    assert len(a.frames) == 5 and a.keys == b.keys
    np.testing.assert_array_equal(a.frames, b.frames)
    assert_same_frames(a, frames)
    assert len(set(a.keys)) == 5                         # drawn without replacement
    assert a.files.found == a.files.considered <= a.window_files == 4   # read until enough
    others = {tuple(recent_unlabeled(str(out), str(inp), days=7, max_frames=5, seed=s,
                                     now=NOW).keys) for s in range(8)}
    assert len(others) > 1                               # the seed matters
    assert len(recent_unlabeled(str(out), str(inp), days=7, max_frames=0, now=NOW).frames) == 0


def test_files_moved_to_the_archive_are_found_and_gone_or_changed_ones_counted(
        history, tmp_path: Path):
    inp, out, frames = history
    arc = tmp_path / "archive"
    write(arc / "b1" / "a.npy", npy_bytes(good_frames(4, seed=99)))   # the name is taken
    archive_files(str(inp), str(arc), ["b1/a.npy"], [])                # as --move-processed
    remember_archive(str(out), str(arc))
    assert len(list((arc / "b1").glob("a.*.npy"))) == 1                # a suffixed copy
    (inp / "b1" / "b.npy").unlink()                                    # gone
    write(inp / "b2" / "c.npy", npy_bytes(good_frames(5, seed=42)))    # same size, new bytes
    write(inp / "root.npy", npy_bytes(good_frames(2, seed=43)))        # another size
    got = recent_unlabeled(str(out), str(inp), days=7, now=NOW)        # archive remembered
    assert got.source_path == ["b1/a.npy"] * 4
    assert_same_frames(got, frames)
    t = got.files
    assert (t.considered, t.found, t.missing, t.changed) == (4, 1, 1, 2)
    assert {k: sorted(v) for k, v in t.named.items()} == {
        "missing": ["b1/b.npy"], "changed": ["b2/c.npy", "root.npy"]}
