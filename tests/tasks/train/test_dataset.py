"""The labeled set (tasks/train/dataset.py): listing, group rule, the honest split, rejections,
the data fingerprint, and tf.data streaming from disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models.spec import HEATMAP_SHAPE, class_names
from tasks.synth.generate import generate_dataset, synth_frames
from tasks.train.dataset import (
    class_distribution,
    data_fingerprint,
    features_of,
    group_of,
    list_labeled,
    load_frames,
    make_tf_dataset,
    scan_labeled,
    split_scan,
)


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labeled_set")
    generate_dataset(out, per_class=8, seed=3)
    return out / "labeled"


def test_group_rule() -> None:
    assert group_of(Path("s03/t02_f004.npy"), "subject") == "s03"
    assert group_of(Path("alice_001.npy"), "subject") == "alice"
    assert group_of(Path("noprefix.npy"), "subject") is None
    assert group_of(Path("s03/t02_f004.npy"), "prefix") == "s03/t02"
    assert group_of(Path("alice_001.npy"), "prefix") == "alice"
    assert group_of(Path("s03/t02_f004.npy"), "none") is None
    with pytest.raises(ValueError, match="unknown group rule"):
        group_of(Path("a.npy"), "take")


def test_list_labeled_classes_sorted_and_groups(labeled: Path) -> None:
    classes, files, ignored = list_labeled(labeled)
    assert classes == class_names()
    assert len(files) == 8 * 17 and not ignored
    f = next(x for x in files if x.rel.startswith("action_up/"))
    assert f.label == classes.index("action_up")
    assert f.group == f.rel.split("/")[1]  # the subject folder


def test_scan_reports_rejections_and_ignored(tmp_path: Path, labeled: Path) -> None:
    root = tmp_path / "lab"
    shutil.copytree(labeled / "dummy", root / "dummy")
    shutil.copytree(labeled / "action_up", root / "action_up")
    (root / "action_up" / "s00" / "broken_f000.npy").write_bytes(b"not a npy file")
    np.save(root / "dummy" / "s00" / "nan_f000.npy",
            np.full((1, *HEATMAP_SHAPE), np.nan, np.float32))
    (root / "dummy" / "notes.txt").write_text("hello")
    (root / "README").write_text("top-level file")
    (root / "empty_class").mkdir()
    scan = scan_labeled(root)
    assert scan.class_names == ["action_up", "dummy"]  # empty folder is no class
    assert {r["reason"] for r in scan.rejected} == {"not_npy", "non_finite"}
    assert {r["path"] for r in scan.rejected} == {"action_up/s00/broken_f000.npy",
                                                  "dummy/s00/nan_f000.npy"}
    assert sorted(scan.ignored) == ["README", "dummy/notes.txt"]
    assert len(scan.files) == 16 and scan.n_frames == 16


def test_group_split_keeps_every_group_on_one_side() -> None:
    rng = np.random.default_rng(0)
    labels, groups = [], []
    for s in range(12):  # 12 subjects, each with a few files of most of 6 classes
        for c in range(6):
            for _ in range(int(rng.integers(0, 5))):
                labels.append(c)
                groups.append(f"s{s:02d}")
    split = split_scan(labels, groups, 6, seed=1)
    assert split.method == "group" and split.note == ""
    sides = [set(np.asarray(groups)[split.side(n)]) for n in ("train", "val", "test")]
    assert all(sides)
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert sorted(split.train + split.val + split.test) == list(range(len(labels)))
    assert set(split.groups["test"]) == sides[2]
    # Stratified: the test side holds most classes, and train holds about 70 %.
    assert len(set(np.asarray(labels)[split.test])) >= 4
    assert 0.5 < len(split.train) / len(labels) < 0.85


def test_group_split_on_generated_subjects(labeled: Path) -> None:
    scan = scan_labeled(labeled)
    split = split_scan(scan.labels(), scan.groups(), len(scan.class_names), seed=0)
    assert split.method == "group"
    subj = {side: {scan.files[i].file.rel.split("/")[1] for i in split.side(side)}
            for side in ("train", "val", "test")}
    assert not (subj["train"] & subj["test"]) and not (subj["val"] & subj["test"])
    assert not (subj["train"] & subj["val"])


def test_split_falls_back_to_files_and_says_so() -> None:
    labels = [c for c in range(4) for _ in range(10)]
    split = split_scan(labels, [None] * len(labels), 4, seed=0)
    assert split.method == "file" and "no groups" in split.note
    assert sorted(split.train + split.val + split.test) == list(range(40))
    for side in (split.val, split.test):  # every class on every side
        assert set(np.asarray(labels)[side]) == {0, 1, 2, 3}
    two = split_scan(labels, ["a", "b"] * 20, 4, seed=0)
    assert two.method == "file" and "only 2 group" in two.note


def test_fingerprint_tracks_content_and_labels(tmp_path: Path, labeled: Path) -> None:
    root = tmp_path / "lab"
    shutil.copytree(labeled / "dummy", root / "dummy")
    shutil.copytree(labeled / "action_up", root / "action_up")
    first = data_fingerprint(scan_labeled(root))
    assert data_fingerprint(scan_labeled(root, group_by="none")) == first  # order, groups
    moved = root / "action_up" / "s00" / "t00_f000.npy"
    (root / "dummy" / "s09").mkdir()
    shutil.move(moved, root / "dummy" / "s09" / "t00_f000.npy")  # same bytes, new label
    assert data_fingerprint(scan_labeled(root)) != first


def test_tf_dataset_streams_frames_and_labels(labeled: Path) -> None:
    scan = scan_labeled(labeled)
    idx = list(range(0, len(scan.files), 7))
    x_mem, y_mem = load_frames(scan, idx)
    for cache in (False, True):
        ds = make_tf_dataset(scan, idx, batch_size=5, cache=cache)
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        assert x.shape == (len(idx), *HEATMAP_SHAPE) and x.dtype == np.float32
        np.testing.assert_array_equal(y, y_mem)
        np.testing.assert_array_equal(x, x_mem)
    shuffled = make_tf_dataset(scan, idx, batch_size=64, shuffle=True, seed=1)
    y1 = np.concatenate([y.numpy() for _, y in shuffled])
    assert sorted(y1.tolist()) == sorted(y_mem.tolist())
    feats, fl = features_of(scan, idx)
    assert feats.shape == (len(idx), 51) and (fl == y_mem).all()


def test_multi_frame_files_give_one_sample_per_frame(tmp_path: Path) -> None:
    for name in ("action_up", "dummy"):
        for s in range(3):
            d = tmp_path / name / f"p{s}"
            d.mkdir(parents=True)
            np.save(d / "take_000.npy", synth_frames([name] * 3, seed=s))
    scan = scan_labeled(tmp_path)
    assert scan.n_frames == 18 and len(scan.files) == 6
    x, y = load_frames(scan, range(6))
    assert x.shape[0] == 18 and np.bincount(y).tolist() == [9, 9]
    # frames, not files, per class; a class without files on the side counts 0
    action_up_files = [i for i, f in enumerate(scan.files) if f.file.label == 0]
    assert class_distribution(scan, range(6)) == {"action_up": 9, "dummy": 9}
    assert class_distribution(scan, action_up_files[:2]) == {"action_up": 6, "dummy": 0}
