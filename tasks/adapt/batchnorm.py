"""AdaBN: the batch-norm statistics re-estimated on the target domain's unlabeled frames.

Why: a network's batch-norm layers normalise with the mean and variance of the frames it was
trained on. Frames drawn by another renderer (wider peaks, another background) shift those
statistics, and every later layer sees inputs off its training range. Re-estimating them on
the production stream, with every weight left alone, is the cheapest adaptation there is and
needs no label (Li et al., "Revisiting Batch Normalization for Practical Domain Adaptation").

Exact, not a running average: each batch-norm layer in turn gets the mean and variance of
its input over all the frames, computed with the layers before it already adapted.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def batchnorm_layers(model: Any) -> list[Any]:
    """The model's batch-norm layers, in graph order."""
    import keras

    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def _input_moments(model: Any, layer: Any, frames: np.ndarray, batch_size: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased) variance of ``layer``'s input over every frame and position."""
    import keras

    probe = keras.Model(model.input, layer.input)
    total, total_sq, count = 0.0, 0.0, 0
    for i in range(0, len(frames), batch_size):
        x = np.asarray(probe(frames[i:i + batch_size], training=False), np.float64)
        x = x.reshape(-1, x.shape[-1])
        total = total + x.sum(axis=0)
        total_sq = total_sq + (x * x).sum(axis=0)
        count += len(x)
    mean = total / count
    return mean.astype(np.float32), np.maximum(total_sq / count - mean * mean, 0).astype(
        np.float32)


def adapt_batchnorm(model: Any, frames: np.ndarray, batch_size: int = 256) -> Any:
    """A copy of ``model`` whose batch-norm moving statistics are those of ``frames``; every
    other weight is the original's. ``model`` itself is left unchanged."""
    import keras

    if not len(frames):
        raise ValueError("AdaBN needs at least one unlabeled frame")
    adapted = keras.models.clone_model(model)
    adapted.set_weights(model.get_weights())
    for layer in batchnorm_layers(adapted):
        mean, var = _input_moments(adapted, layer, frames, batch_size)
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)
    return adapted
