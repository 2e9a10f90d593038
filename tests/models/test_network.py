"""The deployed CNN (models/network.py): the input/output contract and its cost."""

from __future__ import annotations

from pathlib import Path

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


def _canonical_only() -> object:
    import keras

    from models.network import canonical_redraw

    inputs = keras.Input(shape=HEATMAP_SHAPE)
    return keras.Model(inputs, canonical_redraw(inputs))


def test_canonical_redraw_keeps_the_joints_and_drops_the_rendering() -> None:
    """decode -> redraw -> decode keeps every clear joint where it was; the redrawn map is a
    clean Gaussian of the peak's height (no background, no second blob)."""
    from models.keypoints import decode
    from tasks.synth.generate import synth_dataset

    frames = synth_dataset(per_class=2, seed=3).frames
    redrawn = np.asarray(_canonical_only()(frames, training=False))
    xy0, s0 = decode(frames)
    xy1, s1 = decode(redrawn)
    clear = s0 > 0.3
    assert clear.mean() > 0.7
    err = np.linalg.norm(xy1 - xy0, axis=-1)[clear]
    assert np.median(err) <= 0.3 and np.percentile(err, 95) <= 1.0
    np.testing.assert_allclose(s1[clear], np.clip(s0[clear], 0, 1.5), atol=0.03)
    assert redrawn.min() >= 0.0  # background and negative offsets gone
    # far from its peak, a redrawn channel is empty
    far = np.hypot(np.arange(48)[None, :] - xy1[0, 0, 0], np.arange(64)[:, None] - xy1[0, 0, 1])
    assert redrawn[0, 0][far > 10].max() < 1e-4


def test_canonical_model_saves_loads_and_agrees(tmp_path) -> None:
    import keras

    model = build_cnn(5, filters=(4, 8), dense=8, input_mode="canonical")
    x = np.random.default_rng(1).random((4, *HEATMAP_SHAPE), dtype=np.float32)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")  # safe mode
    np.testing.assert_allclose(predict_logits(again, x), predict_logits(model, x), atol=1e-5)
    with pytest.raises(ValueError, match="input_mode"):
        build_cnn(5, input_mode="blurred")


def test_inference_pools_before_the_transpose_with_the_same_numbers(registry_dir: Path):
    """The inference twin (pool in the stored layout, then channels last) gives the saved
    model's logits; a network without that stem gets no twin."""
    from models.network import build_cnn, pool_before_transpose
    from models.registry import Registry, load_model

    model = load_model(Registry(registry_dir).resolve())
    twin = pool_before_transpose(model)
    assert twin is not None
    from tests.support.classify_support import good_frames

    x = good_frames(6, seed=4)
    np.testing.assert_allclose(np.asarray(twin(x, training=False)),
                               np.asarray(model(x, training=False)), rtol=0, atol=1e-6)
    assert "pool_then_transpose" in [layer.name for layer in twin.layers]
    assert pool_before_transpose(build_cnn(17, filters=(4,), dense=8, stem_pool=False,
                                           keypoints=0, compile=False)) is None
