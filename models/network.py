"""The deployed CNN: a small network designed for 17 sparse peak channels on a 64x48 grid.

Input is the file layout as it is, ``(None, 17, 64, 48)`` float32; the transposition to
channels-last lives inside the model so callers never reshape. Keras is imported inside the
function so that importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any

from tasks.spec import HEATMAP_SHAPE


def build_cnn(num_classes: int, filters: tuple[int, ...] = (32, 64, 96), dense: int = 128,
              dropout: float = 0.3, learning_rate: float = 1e-3) -> Any:
    """A compiled Keras CNN. Strided convolutions shrink 64x48 quickly: the peaks are sparse,
    so coarse spatial resolution after two blocks keeps the geometry while staying fast on CPU."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=HEATMAP_SHAPE, dtype="float32", name="heatmaps")
    x = layers.Permute((2, 3, 1), name="to_channels_last")(inputs)
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(dense, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(inputs, outputs, name="posebatch_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
