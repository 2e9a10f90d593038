"""The deployed CNN: a small network designed for 17 sparse peak channels on a 64x48 grid.

Input is the file layout as it is, ``(None, 17, 64, 48)`` float32; the transposition to
channels-last lives inside the model so callers never reshape. Output is LOGITS; callers
apply ``softmax(logits / temperature)``. Keras is imported inside the functions so that
importing this module stays cheap.

Design, and why:

- The input is 17 Gaussian peaks (sigma about 2 px) on mostly empty maps. A 2x2 max-pool
  stem halves the grid first: a peak survives pooling (its position to about a pixel, its
  height exactly), and every later layer is four times cheaper.
- Three conv blocks (conv 3x3, batch norm, ReLU, max-pool) bring the grid to 4x3 with a
  receptive field over the whole body, so the network sees the joints relative to each
  other (what a gesture is), not only where each one is.
- A flatten + dense head keeps the coarse layout (arm above head vs beside hip), dropout
  regularises it. About 0.3 M parameters and roughly 5 M multiply-adds a frame: thousands of
  frames a second on one CPU core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.spec import HEATMAP_SHAPE

INPUT_LAYOUT: dict[str, Any] = {"shape": [None, *HEATMAP_SHAPE],
                                "axes": ["batch", "keypoint", "y", "x"]}
DEFAULT_PARAMS: dict[str, Any] = {"filters": [32, 64, 96], "dense": 128, "dropout": 0.3,
                                  "learning_rate": 2e-3, "stem_pool": True}


def build_cnn(num_classes: int, filters: Sequence[int] = (32, 64, 96), dense: int = 128,
              dropout: float = 0.3, learning_rate: float = 2e-3, stem_pool: bool = True,
              compile: bool = True) -> Any:
    """A (compiled) Keras CNN: ``(None,17,64,48)`` float32 in, ``num_classes`` logits out."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=HEATMAP_SHAPE, dtype="float32", name="heatmaps")
    x = layers.Permute((2, 3, 1), name="to_channels_last")(inputs)
    if stem_pool:
        x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for i, f in enumerate(filters):
        x = layers.Conv2D(int(f), 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(int(dense), activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(inputs, outputs, name="posebatch_cnn")
    if compile:
        compile_cnn(model, learning_rate)
    return model


def compile_cnn(model: Any, learning_rate: Any = 2e-3) -> Any:
    """Adam + sparse cross-entropy on logits; accuracy as the progress metric.
    ``learning_rate``: a float or a Keras learning-rate schedule."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def predict_logits(model: Any, frames: Any, batch_size: int = 256) -> Any:
    """Logits for an in-memory array or a ``tf.data`` dataset of ``(frames, labels)``."""
    import numpy as np

    if isinstance(frames, np.ndarray):
        if len(frames) == 0:
            return np.zeros((0, model.output_shape[-1]), np.float32)
        out = [np.asarray(model(frames[i:i + batch_size], training=False))
               for i in range(0, len(frames), batch_size)]
        return np.concatenate(out).astype(np.float32)
    return np.asarray(model.predict(frames, verbose=0), dtype=np.float32)
