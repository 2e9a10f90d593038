"""The deployed CNN (models/network.py): the input/output contract and its cost."""

from __future__ import annotations

import numpy as np
import pytest

from models.network import INPUT_LAYOUT, build_cnn, predict_logits
from models.spec import HEATMAP_SHAPE


def test_contract_input_layout_and_logits_out() -> None:
    model = build_cnn(17)
    assert tuple(model.input_shape) == (None, *HEATMAP_SHAPE)
    assert tuple(model.output_shape) == (None, 17)
    assert INPUT_LAYOUT == {"shape": [None, 17, 64, 48],
                            "axes": ["batch", "keypoint", "y", "x"]}
    assert model.layers[-1].get_config()["activation"] == "linear"  # logits, not softmax
    assert model.count_params() < 500_000  # small enough to be fast on a CPU
    x = np.random.default_rng(0).random((3, *HEATMAP_SHAPE), dtype=np.float32)
    logits = predict_logits(model, x, batch_size=2)
    assert logits.shape == (3, 17) and logits.dtype == np.float32
    assert not np.allclose(logits.sum(axis=1), 1.0)  # not probabilities
    assert predict_logits(model, x[:0]).shape == (0, 17)


@pytest.mark.parametrize("keypoints", [0, 64])
def test_it_learns_a_trivial_task_quickly(keypoints: int) -> None:
    """The conv trunk alone, and the deployed design with its keypoint branch. The frames
    hold a torso (shoulders, hips), as any pose does: the branch reads joints relative to
    it."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_cnn(2, filters=(8, 16), dense=16, learning_rate=5e-3, keypoints=keypoints)
    x = np.zeros((32, *HEATMAP_SHAPE), np.float32)
    y = np.arange(32) % 2
    if keypoints:
        for ch, (r, c) in {5: (20, 28), 6: (20, 20), 11: (36, 26), 12: (36, 22)}.items():
            x[:, ch, r - 1:r + 2, c - 1:c + 2] = 1.0
    x[y == 0, 9, 5:9, 5:9] = 1.0    # a left-wrist peak top-left
    x[y == 1, 9, 55:59, 40:44] = 1.0  # or bottom-right
    model.fit(x, y, epochs=15, batch_size=8, verbose=0)
    assert (predict_logits(model, x).argmax(axis=1) == y).all()
