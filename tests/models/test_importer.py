"""Importing external models (models/importer.py): the reference project's .h5 layout
([1,17,64,48] samples, softmax out) and other layouts, wrapped to (None,17,64,48) -> logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.calibration import softmax
from models.importer import ImportError_, import_into_registry, load_external, wrap_model
from models.registry import Registry, load_model
from models.spec import HEATMAP_SHAPE, class_names
from tasks.synth.generate import synth_frames
from tests.support.models import reference_h5


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return synth_frames(class_names()[:5], seed=3)


def test_reference_h5_is_wrapped_to_the_contract(tmp_path: Path, frames) -> None:
    import keras

    path, original = reference_h5(tmp_path / "trained_model.h5")
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # a real legacy HDF5 file
    with pytest.raises(ValueError):  # Keras 3 alone cannot run the reference's 5-D conv
        keras.models.load_model(path, compile=False)
    reg = Registry(tmp_path / "registry")
    entry, promoted = import_into_registry(reg, path, class_names())
    assert promoted and reg.production_version() == entry.version  # first model
    meta = entry.metadata
    assert meta["output"] == "logits" and meta["source"] == "import"
    assert meta["import"]["input_adapter"] == "singleton_axis_squeezed"
    assert meta["import"]["output_transform"] == "softmax_removed"
    assert meta["import"]["source_input_shape"] == [None, 1, 17, 64, 48]
    assert meta["input_layout"]["shape"] == [None, *HEATMAP_SHAPE]
    assert meta["class_names"] == class_names() and meta["temperature"] == 1.0

    model = load_model(reg.resolve())
    assert tuple(model.input_shape) == (None, *HEATMAP_SHAPE)
    logits = np.asarray(model(frames))
    expected = np.asarray(original(frames))  # what the reference computed
    np.testing.assert_allclose(softmax(logits), expected, atol=1e-5)
    assert (logits.argmax(1) == expected.argmax(1)).all()


def test_channels_last_model_with_softmax_layer(frames) -> None:
    import keras
    from keras import layers

    inp = keras.Input((64, 48, 17))
    x = layers.Conv2D(4, 3, strides=4)(inp)
    x = layers.Flatten()(x)
    x = layers.Dense(5)(x)
    out = layers.Softmax()(x)
    ext = keras.Model(inp, out)
    wrapped, facts = wrap_model(ext, 5)
    assert facts["input_adapter"] == "channels_last"
    assert facts["output_transform"] == "softmax_removed"
    probs = np.asarray(ext(frames.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(softmax(np.asarray(wrapped(frames))), probs, atol=1e-5)


def test_untraceable_probabilities_become_log_probabilities(tmp_path: Path, frames) -> None:
    import keras
    from keras import layers

    inp = keras.Input(HEATMAP_SHAPE)
    x = layers.Flatten()(inp)
    x = layers.Dense(5)(x)
    out = keras.ops.softmax(x * 1.0)  # probabilities from an op, not a softmax layer
    ext = keras.Model(inp, out)
    path = tmp_path / "ops.keras"
    ext.save(path)
    wrapped, facts = wrap_model(load_external(path)[0], 5)
    assert facts["output_transform"] == "log_probabilities"
    np.testing.assert_allclose(softmax(np.asarray(wrapped(frames))), ext(frames), atol=1e-5)
    reg = Registry(tmp_path / "reg")
    reg.register(wrapped, {"class_names": list("abcde")})
    again = load_model(reg.get("v0001"))  # the log op survives save/load (safe mode)
    np.testing.assert_allclose(again(frames), wrapped(frames), atol=1e-5)


def test_bad_imports_are_refused(tmp_path: Path) -> None:
    import keras

    path, _ = reference_h5(tmp_path / "ref.h5", n_classes=4)
    with pytest.raises(ImportError_, match="4 outputs but 17 class names"):
        import_into_registry(Registry(tmp_path / "r"), path, class_names())
    odd = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)])
    with pytest.raises(ImportError_, match="unsupported model input shape"):
        wrap_model(odd, 3)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"definitely not hdf5")
    with pytest.raises(ImportError_, match="cannot load junk.h5"):
        load_external(junk)
    pickle = tmp_path / "model.pkl"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(ImportError_, match="expected a .keras or .h5"):
        load_external(pickle)
    with pytest.raises(ImportError_, match="does not exist"):
        load_external(tmp_path / "missing.keras")
