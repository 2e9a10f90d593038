"""The stand-in renderer for real ViTPose data (bench/standin.py): shapes, dtype and range,
determinism, the decode round trip on clean joints, and the labeled-folder layout that
``retrain`` reads. ``bench`` is not a package, so the module is loaded from its path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from models.keypoints import decode
from models.spec import HEATMAP_SHAPE, class_names

PATH = Path(__file__).resolve().parents[2] / "bench" / "standin.py"


@pytest.fixture(scope="module")
def standin():
    spec = importlib.util.spec_from_file_location("bench_standin_under_test", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("strength", ["moderate", "hard"])
def test_shapes_dtype_range(standin, strength: str) -> None:
    names = class_names()[:4]
    frames, labels, persons = standin.render_standin(names, 6, 3, seed=5, strength=strength)
    assert frames.shape == (24, *HEATMAP_SHAPE) and frames.dtype == np.float32
    assert np.isfinite(frames).all() and frames.min() >= -1 and frames.max() <= 4
    assert frames.min() < 0 < frames.max()  # a background below zero, peaks above
    assert labels.dtype == np.int64 and persons.dtype == np.int64
    assert np.array_equal(np.bincount(labels), [6] * 4)
    for c in range(4):  # every person performs every class
        assert set(persons[labels == c].tolist()) == {0, 1, 2}


def test_deterministic_for_a_seed(standin) -> None:
    names = class_names()
    a = standin.render_standin(names, 2, 2, seed=3, strength="hard")
    b = standin.render_standin(names, 2, 2, seed=3, strength="hard")
    c = standin.render_standin(names, 2, 2, seed=4, strength="hard")
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_rejects_unknown_strength(standin) -> None:
    with pytest.raises(ValueError, match="strength"):
        standin.render_standin(class_names(), 1, 1, seed=0, strength="extreme")


@pytest.mark.parametrize("strength", ["moderate", "hard"])
def test_decode_round_trip_on_clean_joints(standin, strength: str) -> None:
    s = standin.standin_sample(class_names(), 8, 4, seed=2, strength=strength)
    err = np.linalg.norm(decode(s.frames)[0] - s.joints, axis=-1)
    assert s.clean.mean() > 0.7
    assert np.median(err[s.clean]) < 1.0
    assert np.quantile(err[s.clean], 0.9) < 1.5


def test_write_labeled_is_a_labeled_folder(standin, tmp_path: Path) -> None:
    from tasks.train.dataset import scan_labeled

    names = class_names()[:3]
    frames, labels, persons = standin.render_standin(names, 4, 2, seed=1)
    paths = standin.write_labeled(tmp_path, frames, labels, persons, names)
    assert len(paths) == 12 and paths[0] == tmp_path / names[0] / "p00" / "f000.npy"
    one = np.load(paths[5])
    assert one.shape == (1, *HEATMAP_SHAPE) and one.dtype == np.float32
    assert np.array_equal(one[0], frames[5])
    scan = scan_labeled(tmp_path)
    assert scan.class_names == names and not scan.rejected
    assert sorted(set(scan.groups())) == ["p00", "p01"]
