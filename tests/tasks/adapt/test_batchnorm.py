"""AdaBN (tasks/adapt/batchnorm.py): only the batch-norm statistics move, to the stream's."""

from __future__ import annotations

import numpy as np

from tasks.adapt.batchnorm import adapt_batchnorm, batchnorm_layers
from tests.support.models import tiny_cnn


def _stats_names(model) -> set[str]:
    return {v.path for layer in batchnorm_layers(model)
            for v in (layer.moving_mean, layer.moving_variance)}


def test_adabn_changes_only_batchnorm_statistics() -> None:
    import keras

    from tasks.synth.generate import synth_dataset

    model = tiny_cnn(17)
    frames = synth_dataset(per_class=2, seed=5).frames * 1.7 + 0.05  # a shifted "stream"
    before = {v.path: np.array(v) for v in model.weights}
    adapted = adapt_batchnorm(model, frames, batch_size=8)
    after = {v.path: np.array(v) for v in adapted.weights}
    assert {v.path: np.array(v) for v in model.weights}.keys() == before.keys()
    for path, value in before.items():  # the original model is untouched
        np.testing.assert_array_equal(np.array(dict((v.path, v) for v in model.weights)[path]),
                                      value)
    stats = _stats_names(adapted)
    assert stats and len(after) == len(before)
    moved = {p for p in before if not np.array_equal(before[p], after[p])}
    assert moved and moved <= stats  # every changed weight is a BN statistic
    # each BN layer now normalises the stream to mean 0 / variance 1 before scale and shift
    layer = batchnorm_layers(adapted)[0]
    x = np.asarray(keras.Model(adapted.input, layer.input)(frames), np.float64)
    np.testing.assert_allclose(np.array(layer.moving_mean), x.reshape(-1, x.shape[-1]).mean(0),
                               rtol=1e-3, atol=1e-4)
