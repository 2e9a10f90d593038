"""Fed-back labels as training data: frames found by content hash (also in the archive),
changed, missing and unknown-class labels refused and counted; the held-out split grouped,
never empty or everything, and stable as more feedback arrives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from models.spec import class_names
from tasks.adapt.feedback import feedback_frames, holdout_keys, holdout_split
from tasks.classify.archive import archive_files, remember_archive
from tests.support.adapt_support import commit_files, record_labels, write_inputs
from tests.support.classify_support import good_frames, npy_bytes, write

NAMES = class_names()
AT = datetime(2026, 11, 30, 12, tzinfo=UTC)
FILES = {"b1/a.npy": 3, "b1/b.npy": 2, "b2/c.npy": 2, "b3/d.npy": 1, "e.npy": 1}
LABELS = [("b1/a.npy", 0, NAMES[0]), ("b1/a.npy", 2, NAMES[1]), ("b1/b.npy", None, NAMES[2]),
          ("b2/c.npy", 1, NAMES[3]), ("b3/d.npy", 0, NAMES[4]), ("e.npy", 0, NAMES[5])]


@pytest.fixture()
def labeled(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Five files classified, seven of their frames labeled (one relabeled later)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    frames = write_inputs(inp, FILES)
    commit_files(inp, out, sorted(FILES), AT, "c1")
    assert record_labels(out, LABELS, AT) == 7
    assert record_labels(out, [("e.npy", 0, NAMES[6])], AT + timedelta(hours=1)) == 1
    return inp, out, frames


def test_labeled_frames_are_found_by_hash_after_the_files_moved_to_the_archive(
        labeled, tmp_path: Path):
    inp, out, frames = labeled
    arc = tmp_path / "archive"
    write(arc / "b1" / "a.npy", npy_bytes(good_frames(3, seed=99)))   # the name is taken
    archive_files(str(inp), str(arc), sorted(FILES), [])              # as --move-processed
    remember_archive(str(out), str(arc))
    assert not list(inp.rglob("*.npy"))
    fb = feedback_frames(str(out), str(inp), NAMES)                    # archive remembered
    got = list(zip(fb.source_path, fb.frame_index.tolist(), fb.labels.tolist(), strict=True))
    assert got == [("b1/a.npy", 0, 0), ("b1/a.npy", 2, 1), ("b1/b.npy", 0, 2),
                   ("b1/b.npy", 1, 2), ("b2/c.npy", 1, 3), ("b3/d.npy", 0, 4),
                   ("e.npy", 0, 6)]                                    # the latest label
    assert fb.batch == ["b1", "b1", "b1", "b1", "b2", "b3", ""]
    assert fb.frames.dtype == np.float32 and fb.labels.dtype == np.int64
    for k, (path, i, _) in enumerate(got):
        np.testing.assert_array_equal(fb.frames[k], frames[path][i])
    assert (fb.recorded, fb.unknown_class, fb.tally.found, fb.tally.considered) == (7, 0, 7, 7)
    assert fb.content_sha256[0] != fb.content_sha256[2] and fb.class_names == NAMES


def test_changed_missing_and_unknown_class_labels_are_counted_named_and_never_used(labeled):
    inp, out, _ = labeled
    write(inp / "b1" / "a.npy", npy_bytes(good_frames(3, seed=42)))   # rewritten in place
    (inp / "b2" / "c.npy").unlink()
    without = [n for n in NAMES if n != NAMES[4]]                      # d.npy's class
    fb = feedback_frames(str(out), str(inp), without)
    assert list(zip(fb.source_path, fb.labels.tolist(), strict=True)) == [
        ("b1/b.npy", 2), ("b1/b.npy", 2), ("e.npy", without.index(NAMES[6]))]
    assert (fb.unknown_class, fb.unknown_labels) == (1, [NAMES[4]])
    t = fb.tally
    assert (t.considered, t.found, t.changed, t.missing) == (6, 3, 2, 1)
    assert t.named == {"changed": ["b1/a.npy"], "missing": ["b2/c.npy"]}


def test_no_feedback_gives_no_frames(tmp_path: Path):
    fb = feedback_frames(str(tmp_path / "out"), str(tmp_path / "in"), NAMES)
    assert fb.frames.shape == (0, 17, 64, 48) and fb.labels.shape == (0,)
    assert (fb.recorded, fb.tally.considered) == (0, 0)


# -- the held-out split -------------------------------------------------------------------
def frames_of(batches: int, files: int = 3, frames: int = 2) -> tuple[list[str], list[str]]:
    """(batch, path) of every frame: ``batches`` batches of ``files`` files."""
    rows = [(f"b{b:02d}", f"b{b:02d}/f{f}.npy") for b in range(batches)
            for f in range(files) for _ in range(frames)]
    return [b for b, _ in rows], [p for _, p in rows]


def sides(batches: list[str], keys: list[str], split) -> tuple[set[str], set[str]]:
    train, test = split
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(keys)))
    return {keys[i] for i in train}, {keys[i] for i in test}


def test_whole_batches_are_held_out_never_none_and_never_all():
    for seed in range(30):
        for n in (3, 4, 7, 20):
            batches, paths = frames_of(n)
            train, test = sides(batches, batches, holdout_split(batches, paths, 0.3, seed))
            assert train and test and not train & test
    batches, paths = frames_of(40)
    _, test = sides(batches, batches, holdout_split(batches, paths, 0.3, seed=1))
    assert 0.15 < len(test) / 40 < 0.45                  # about the fraction
    assert holdout_split(batches, paths, seed=5)[1].tolist() == \
        holdout_split(batches, paths, seed=5)[1].tolist()


def test_with_fewer_than_three_batches_whole_files_are_held_out():
    for seed in range(30):
        batches, paths = frames_of(2, files=4)
        train, test = sides(batches, paths, holdout_split(batches, paths, 0.3, seed))
        assert train and test and not train & test      # by file: batches on both sides
        two = ["b", "b", "b"], ["b/x.npy", "b/x.npy", "b/y.npy"]
        train, test = sides(two[0], two[1], holdout_split(*two, seed=seed))
        assert len(train) == len(test) == 1               # 2 files: one each side
    one = holdout_split(["b"] * 3, ["b/x.npy"] * 3)
    assert one[0].tolist() == [0, 1, 2] and one[1].tolist() == []
    assert holdout_split([], [])[1].tolist() == []
    roots = ["", "", "", "b"], ["r1.npy", "r2.npy", "r3.npy", "b/x.npy"]   # root files:
    assert holdout_keys(*roots, seed=0) <= {"r1.npy", "r2.npy", "r3.npy", "b"}  # own batches
    with pytest.raises(ValueError):
        holdout_split(*roots, fraction=1.0)


def test_a_held_out_batch_stays_held_out_as_more_feedback_arrives():
    moved = 0
    for seed in range(30):
        before = holdout_keys(*frames_of(5), 0.3, seed)
        for n in (8, 13, 30):
            after = holdout_keys(*frames_of(n), 0.3, seed)
            if not before <= after:   # only the at-least-one fix-up's lone group moves,
                assert len(before) == 1  # released once a group held by its hash arrives
                moved += 1
            before = after
    assert moved <= 6
    # with the keys recorded and passed back, nothing held out ever moves: not the fix-ups,
    # not the switch from files (2 batches) to batches (3 and more)
    for seed in range(30):
        batches, paths = frames_of(2, files=4)
        held = holdout_keys(batches, paths, 0.3, seed)
        for n in (3, 5, 8, 30):
            batches, paths = frames_of(n, files=4)
            test = set(holdout_split(batches, paths, 0.3, seed, keep=held)[1].tolist())
            assert {i for i, p in enumerate(paths) if p in held or batches[i] in held} <= test
            held = holdout_keys(batches, paths, 0.3, seed, keep=held)
            assert len(held) < n
