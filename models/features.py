"""The classical methods: scikit-learn models on decoded keypoint features, and the floor.

Features come from ``models.keypoints`` (coordinates relative to the mid-hip, divided by the
torso length, plus peak heights); the scan computes them once per frame. Every retrain fits
these on the same split as the CNN so the report can compare methods side by side; the
majority-class baseline is the floor any method must clear.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHODS = ("majority", "logreg", "hgb")
DESCRIPTIONS = {
    "majority": "majority-class baseline",
    "logreg": "logistic regression on keypoint features",
    "hgb": "histogram gradient boosting on keypoint features",
}


def make_method(name: str, seed: int = 0) -> Any:
    """An unfitted scikit-learn estimator for ``name`` (one of ``METHODS``)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "majority":
        return DummyClassifier(strategy="most_frequent")
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    if name == "hgb":
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1,
                                              early_stopping=False, random_state=seed)
    raise ValueError(f"unknown method {name!r}; use one of {', '.join(METHODS)}")


def fit_predict(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                n_classes: int, seed: int = 0) -> tuple[np.ndarray, Any]:
    """Fit on train, return (probabilities ``[N, n_classes]`` on test, fitted model).

    Columns follow the class indices even when a class is missing from the training side."""
    from threadpoolctl import threadpool_limits

    model = make_method(name, seed)
    probs = np.zeros((len(x_test), n_classes), dtype=np.float64)
    # One thread (OpenMP, BLAS): on small sets (and a shared 2-core machine) more threads spin-wait
    # and make gradient boosting many times slower, not faster.
    with threadpool_limits(limits=1):
        model.fit(x_train, y_train)
        if len(x_test):
            probs[:, model.classes_] = model.predict_proba(x_test)
    return probs, model
