"""The scikit-learn methods on keypoint features (models/features.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import METHODS, fit_predict
from models.keypoints import keypoint_features
from tasks.synth.generate import synth_frames

CLASSES = ["action_up", "category_events", "dummy", "action_outside"]


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(CLASSES), 160)
    x = keypoint_features(synth_frames([CLASSES[i] for i in y], seed=11))
    return x, y


@pytest.mark.parametrize("name", ["logreg", "hgb"])
def test_methods_learn_the_gestures(feats, name: str) -> None:
    x, y = feats
    probs, model = fit_predict(name, x[:120], y[:120], x[120:], len(CLASSES))
    assert probs.shape == (40, len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs.argmax(axis=1) == y[120:]).mean() > 0.8


def test_majority_is_the_floor_and_missing_classes_get_zero_columns(feats) -> None:
    x, y = feats
    keep = y[:120] != 3  # class 3 never seen in training
    probs, _ = fit_predict("majority", x[:120][keep], y[:120][keep], x[120:], 5)
    assert probs.shape == (40, 5)
    assert (probs[:, 3] == 0).all() and (probs[:, 4] == 0).all()
    assert len(set(probs.argmax(axis=1).tolist())) == 1
    assert set(METHODS) == {"majority", "logreg", "hgb"}
    with pytest.raises(ValueError):
        fit_predict("svm", x, y, x, 4)
