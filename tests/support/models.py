"""Builders shared by the retraining and registry tests (tests/models, tests/tasks,
tests/flows): tiny Keras models and the reference project's architecture as a legacy .h5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.spec import HEATMAP_SHAPE


def tiny_cnn(n_classes: int = 17, seed: int = 0) -> Any:
    """The deployed CNN design at toy size (fast to build, save and load)."""
    import keras

    from models.network import build_cnn

    keras.utils.set_random_seed(seed)
    return build_cnn(n_classes, filters=(4, 8), dense=8)


REFERENCE_INPUT = [None, 1, *HEATMAP_SHAPE]


def reference_model(n_classes: int = 17, seed: int = 0) -> Any:
    """The reference ViTPose_classification network, computed the way it ran: Conv2D(32,
    3x3, relu), Flatten, Dense(128, relu), Dense(n, softmax) on each ``[1,17,64,48]`` sample.

    tf.keras 2 applied the Conv2D to the 5-D batch ``(None,1,17,64,48)`` by treating the
    leading axes as batch axes; Keras 3 refuses 5-D input to Conv2D, so this builds the
    identical computation on ``(None,17,64,48)`` (same weights, same flatten order)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=HEATMAP_SHAPE),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _to_reference_shape(obj: Any) -> None:
    """Rewrite input shapes (None,17,64,48) -> (None,1,17,64,48) in a model config."""
    if isinstance(obj, dict):
        for key in ("batch_input_shape", "batch_shape", "build_input_shape"):
            v = obj.get(key)
            if isinstance(v, list) and len(v) == 4 and tuple(v[1:]) == HEATMAP_SHAPE:
                obj[key] = [v[0], 1, *v[1:]]
        for v in obj.values():
            _to_reference_shape(v)
    elif isinstance(obj, list):
        for v in obj:
            _to_reference_shape(v)


def reference_h5(path: Path, n_classes: int = 17, seed: int = 0) -> tuple[Path, Any]:
    """A legacy HDF5 file like the reference project's ``trained_model.h5``: the model
    config declares the ``(None,1,17,64,48)`` input the reference trained with, written by
    "Keras 2"; returns (path, a Keras 3 model computing what the reference computed)."""
    import json

    import h5py

    model = reference_model(n_classes, seed)
    rng = np.random.default_rng(seed)  # move the head off its init so classes differ
    last = model.layers[-1]
    w, b = last.get_weights()
    last.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype), b])
    model.save(path)  # .h5 suffix: Keras writes the legacy HDF5 format
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        _to_reference_shape(config)
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.12.0"
    return path, model
