"""Shared fixtures and builders for the classification tests (tasks and flows).

A tiny CNN is registered as production in a session registry, so tests run the real model
path (registry -> Keras -> compiled call).
Bad files are built one per rejection reason of ``tasks.io.validate.REASONS``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from models.spec import HEATMAP_SHAPE, class_names

TEMPERATURE = 1.7


def training_counts() -> dict[str, int]:
    """The shared model's recorded training mix: uneven on purpose, so drift is non-zero."""
    return {name: 10 * (i + 1) for i, name in enumerate(class_names())}




def shared_registry(factory: pytest.TempPathFactory) -> Path:
    """A registry whose production model is a tiny (untrained) CNN of the deployed design,
    built once per test session by the ``registry_dir`` fixture (tests/conftest.py), with a
    recorded training class mix as the retraining flow writes it.
    These tests check plumbing and numbers against the model, not its accuracy."""
    from models.network import build_cnn
    from models.registry import Registry

    names = class_names()
    model = build_cnn(len(names), filters=(8, 16, 16), dense=32)
    root = factory.mktemp("registry")
    reg = Registry(root)
    entry = reg.register(model, {"class_names": names, "temperature": TEMPERATURE,
                                 "class_distribution": training_counts(),
                                 "input_layout": {"shape": [None, *HEATMAP_SHAPE],
                                                  "axes": ["batch", "keypoint", "y", "x"]}})
    reg.set_production(entry.version, "test model", "promote")
    return root


def with_onnx(registry_dir: Path, dest: Path, versions: list[str] | None = None) -> Path:
    """A copy of ``registry_dir`` at ``dest`` whose versions (all, or ``versions``) carry a
    verified ``model.onnx``, as every retrained version does: ``--engine auto`` then runs
    them on ONNX Runtime, and a fresh CLI process never imports TensorFlow.

    Why: the crash and resume tests start a dozen ``posebatch`` processes; on Keras each
    one pays about 8 s of CPU for TensorFlow's import and the model's first call, which is
    not what they test (the engines' own tests are tests/flows/test_onnx_classify.py and
    tests/tasks/classify/test_engine.py)."""
    import shutil

    from models.registry import Registry
    from tasks.train.inference_artifact import export_version

    if not dest.exists():
        shutil.copytree(registry_dir, dest)
    reg = Registry(dest)
    for version in versions or reg.versions():
        status = export_version(reg, version)
        assert status["status"] in ("verified", "kept"), status
    return dest


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def good_frames(n: int, seed: int = 0) -> np.ndarray:
    from tasks.synth.generate import synth_frames

    names = class_names()
    return synth_frames([names[(seed + i) % len(names)] for i in range(n)], seed=seed)


def bad_files() -> dict[str, bytes]:
    """One file's bytes per rejection reason (``read_error`` needs an unreadable file)."""
    frame = good_frames(1, seed=3)
    # A header claiming 10**6 frames (13 GB) on a one-frame file: refused without allocating.
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": (10**6, *HEATMAP_SHAPE)})
    huge = head.getvalue() + frame.tobytes()
    nan = frame.copy()
    nan[0, 0, 0, 0] = np.nan
    return {
        "not_npy": b"this is not a numpy file at all\n" * 4,
        "bad_dtype": npy_bytes(np.zeros((1, *HEATMAP_SHAPE), np.int32)),
        "bad_shape": npy_bytes(np.zeros((1, 17, 32, 48), np.float32)),
        "too_many_frames": huge,
        "truncated": npy_bytes(frame)[:-1000],
        "non_finite": npy_bytes(nan),
        "out_of_range": npy_bytes(frame * 100.0),
    }


def write(path: Path, data: bytes, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def make_input(root: Path, batches: int = 2, per_batch: int = 12, seed: int = 5) -> Path:
    """Generated incoming batches (with ``_SUCCESS``) under ``root``; returns the input dir."""
    from tasks.synth.generate import generate_dataset

    generate_dataset(root, per_class=0, seed=seed, incoming_batches=batches,
                     incoming_per_batch=per_batch)
    return root / "incoming"
