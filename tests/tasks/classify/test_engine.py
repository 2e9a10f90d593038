"""The inference engines behind one interface (tasks/classify/engine.py): one suite run
against both backends, then the choice between them (auto, asked for, refused).

The registry holds a tiny CNN of the deployed design with its verified model.onnx (made by
the migration, ``tasks.train.inference_artifact.export_version``), so both engines load
the same version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.registry import Registry, load_model
from tasks.classify.engine import (
    EngineError,
    aligned_zeros,
    choose_engine,
    open_engine,
    probabilities,
)
from tasks.classify.infer import classify_files, load_predictor
from tests.support.classify_support import good_frames, npy_bytes, write

ENGINES = ("keras", "onnx")


@pytest.fixture(scope="module")
def onnx_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one tiny model (temperature 1.7) and its verified model.onnx."""
    from models.spec import class_names
    from tasks.train.inference_artifact import export_version
    from tests.support.models import tiny_cnn

    root = tmp_path_factory.mktemp("onnx_registry")
    reg = Registry(root)
    entry = reg.register(tiny_cnn(), {"class_names": class_names(), "temperature": 1.7})
    reg.set_production(entry.version, "test model")
    assert export_version(reg, entry.version)["status"] == "verified"
    return root


@pytest.fixture(scope="module")
def keras_logits(onnx_registry: Path) -> tuple[np.ndarray, np.ndarray]:
    frames = good_frames(11, seed=5)
    model = load_model(Registry(onnx_registry).get("v0001"))
    return frames, np.asarray(model(frames, training=False))


@pytest.mark.parametrize("name", ENGINES)
def test_engine_gives_the_models_logits_for_full_and_partial_batches(
        name: str, onnx_registry: Path, keras_logits: tuple[np.ndarray, np.ndarray]):
    frames, expected = keras_logits
    engine = open_engine(Registry(onnx_registry).get("v0001"), name, batch_size=8)
    assert engine.name == name and engine.width == 17 and engine.batch_size == 8
    buf = aligned_zeros((8, *frames.shape[1:]))
    buf[:] = frames[:8]
    np.testing.assert_allclose(engine.logits(buf, 8), expected[:8], rtol=0, atol=1e-4)
    buf[:3] = frames[8:]                         # the last batch: 3 rows, then stale padding
    out = engine.logits(buf, 3)
    assert out.shape == (3, 17)
    np.testing.assert_allclose(out, expected[8:], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ENGINES)
def test_classify_files_on_each_engine_gives_the_same_labels_and_confidences(
        name: str, onnx_registry: Path, keras_logits: tuple[np.ndarray, np.ndarray],
        tmp_path: Path):
    frames, expected = keras_logits
    write(tmp_path / "b" / "multi.npy", npy_bytes(frames[:6]))
    for i, f in enumerate(frames[6:]):
        write(tmp_path / "b" / f"s{i}.npy", npy_bytes(f[None]))
    files = sorted((p.relative_to(tmp_path).as_posix(), p.stat().st_size)
                   for p in (tmp_path / "b").iterdir())
    res = classify_files(str(tmp_path), files, str(onnx_registry), "v0001", batch_size=4,
                         engine=name)
    assert res.engine == name and res.probabilities.shape == (11, 17)
    assert [f.path for f in res.files] == ["b/multi.npy"] + [f"b/s{i}.npy" for i in range(5)]
    assert res.frame_index.tolist() == [0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0]  # rows: frames 0..10
    want = probabilities(expected, 1.7)          # the temperature, applied the one way
    np.testing.assert_allclose(res.probabilities, want, rtol=0, atol=1e-4)
    assert (res.probabilities.argmax(1) == want.argmax(1)).all()


def test_predictors_are_cached_per_engine(onnx_registry: Path):
    a = load_predictor(str(onnx_registry), "v0001", 4, engine="onnx")
    assert load_predictor(str(onnx_registry), "v0001", 4, engine="auto") is a
    assert load_predictor(str(onnx_registry), "v0001", 4, engine="keras") is not a


def test_auto_takes_the_verified_file_and_asking_is_honoured(onnx_registry: Path):
    entry = Registry(onnx_registry).get("v0001")
    assert choose_engine(entry, "auto") == ("onnx", "verified ONNX file")
    assert choose_engine(entry, "keras") == ("keras", "asked for")
    assert choose_engine(entry, "onnx") == ("onnx", "asked for")
    with pytest.raises(EngineError, match="unknown engine 'tflite'"):
        choose_engine(entry, "tflite")


def test_without_a_verified_file_auto_falls_back_and_onnx_is_refused(registry_dir: Path):
    entry = Registry(registry_dir).get("v0001")     # the shared registry: no model.onnx
    engine, why = choose_engine(entry, "auto")
    assert engine == "keras" and why.startswith("fallback: no ONNX file recorded")
    with pytest.raises(EngineError, match="cannot run on onnx: no ONNX file recorded"):
        choose_engine(entry, "onnx")


def test_a_refused_export_and_a_changed_file_are_never_run(onnx_registry: Path,
                                                          tmp_path: Path):
    copy = tmp_path / "reg"
    shutil.copytree(onnx_registry, copy)
    version = copy / "versions" / "v0001"
    record = json.loads((version / "onnx.json").read_text())  # the migration's record
    assert record["status"] == "verified"
    (version / "model.onnx").write_bytes(b"not the checked file")
    with pytest.raises(EngineError, match="does not match the SHA-256"):
        open_engine(Registry(copy).get("v0001"), "onnx", 4)
    (version / "model.onnx").unlink()
    engine, why = choose_engine(Registry(copy).get("v0001"), "auto")
    assert engine == "keras" and why == f"fallback: model.onnx is missing from {version}"
    record.update(status="refused", reason="check failed: max abs logit difference 0.2")
    (version / "onnx.json").write_text(json.dumps(record))
    engine, why = choose_engine(Registry(copy).get("v0001"), "auto")
    assert engine == "keras" and why == "fallback: check failed: max abs logit difference 0.2"


def test_onnx_runs_a_batch_in_slices_with_the_same_numbers(
        onnx_registry: Path, keras_logits: tuple[np.ndarray, np.ndarray],
        monkeypatch: pytest.MonkeyPatch):
    """ONNX Runtime gets a batch in slices of ONNX_CALL_FRAMES (its arena keeps the largest
    call's activations): rows come back whole and in order, the last slice partial."""
    import tasks.classify.engine as engine_module

    frames, expected = keras_logits
    monkeypatch.setattr(engine_module, "ONNX_CALL_FRAMES", 3)
    engine = open_engine(Registry(onnx_registry).get("v0001"), "onnx", batch_size=11)
    buf = aligned_zeros(frames.shape)
    buf[:] = frames
    for n in (11, 7, 3, 1):
        np.testing.assert_allclose(engine.logits(buf, n), expected[:n], rtol=0, atol=1e-4)
