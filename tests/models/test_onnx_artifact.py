"""The ONNX artifact (models/onnx_artifact.py): exported, checked against the Keras model,
recorded; refused with its reason when the export's numbers differ or it cannot be made."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import onnx_artifact
from models.onnx_artifact import artifact_status, build_artifact, check_onnx, export_onnx
from models.registry import Registry
from models.spec import class_names
from tests.support.classify_support import good_frames
from tests.support.models import tiny_cnn


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return good_frames(24, seed=9)


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_cnn(seed=0)


def test_a_verified_artifact_records_its_hash_check_and_versions(model: Any, frames: np.ndarray,
                                                                 tmp_path: Path):
    data, meta = build_artifact(model, frames, "test split: 24 frames")
    assert data is not None and meta["status"] == "verified"
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["bytes"] == len(data)
    assert meta["source"] == "pooled twin" and meta["opset"] == onnx_artifact.OPSET
    assert {"onnxruntime", "tf2onnx", "onnx", "keras"} <= set(meta["versions"])
    check = meta["check"]
    assert check["frames"] == 24 and check["argmax_agreement"] == 1.0
    assert check["max_abs_logit_diff"] <= onnx_artifact.TOLERANCE
    assert check["checked_on"] == "test split: 24 frames"
    # registered with it (the retrain hook): usable while the file is beside the model
    entry = Registry(tmp_path).register(model, {"class_names": class_names(), "onnx": meta},
                                        extra_files={"model.onnx": data})
    assert entry.metadata["files"]["model.onnx"] == meta["sha256"]
    assert artifact_status(entry) is None and entry.read_file("model.onnx") == data
    (entry.path / "model.onnx").unlink()
    assert artifact_status(entry) == f"model.onnx is missing from {entry.uri}"


def test_the_check_refuses_an_export_whose_output_differs(model: Any, frames: np.ndarray,
                                                          monkeypatch: pytest.MonkeyPatch):
    """An ONNX file that computes something else (here: another model's weights) is not
    registered: the check compares it with the Keras model's own logits."""
    other, _ = export_onnx(tiny_cnn(seed=1))
    monkeypatch.setattr(onnx_artifact, "export_onnx", lambda m: (other, "model"))
    data, meta = build_artifact(model, frames, "test split")
    assert data is None and meta["status"] == "refused"
    assert meta["reason"].startswith("check failed: max abs logit difference")
    assert meta["check"]["max_abs_logit_diff"] > onnx_artifact.TOLERANCE


def test_the_check_needs_identical_argmax_and_a_small_difference(model: Any,
                                                                 frames: np.ndarray):
    data, _ = export_onnx(model)
    expected = np.asarray(model(frames, training=False))
    assert check_onnx(data, frames, expected)["reason"] is None
    shifted = check_onnx(data, frames, expected + 1e-3)
    assert "exceeds the tolerance" in shifted["reason"]
    # however loose the tolerance, a frame whose label differs is refused
    moved = expected.copy()
    top = moved.argmax(1)[0]
    moved[0, (top + 1) % moved.shape[1]] = moved[0, top] + 0.5
    assert check_onnx(data, frames, moved, tolerance=100.0)["reason"] == \
        "argmax differs on 1 of 24 frames"


def test_a_model_that_does_not_convert_is_recorded_not_raised(frames: np.ndarray):
    """The canonical input mode decodes with ops ONNX has no kernel for (Bitcast and
    BitwiseAnd in Keras's argmax on TensorFlow): registration goes on without the file."""
    import keras

    from models.network import build_cnn

    keras.utils.set_random_seed(0)
    canonical = build_cnn(17, filters=(4, 8), dense=8, input_mode="canonical", compile=False)
    data, meta = build_artifact(canonical, frames[:4], "test split")
    assert data is None and meta["status"] == "refused"
    assert "Bitcast" in meta["reason"] or "export failed" in meta["reason"], meta["reason"]
