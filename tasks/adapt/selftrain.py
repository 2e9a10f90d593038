"""Self-training on the unlabeled stream: class-balanced pseudo-labels above a calibrated
confidence, one short fine-tuning round at a time.

Why these limits: entropy minimisation run for several epochs collapses a model onto a few
classes (Tent issue #7), and pseudo-labels taken by confidence alone are mostly the classes
the model already finds easy, so it learns to predict them more. Here a frame is used only
when its *calibrated* confidence clears the threshold, every predicted class gets the same
budget of frames (the most confident first), the labeled frames stay in every round, and a
round is a few hundred optimizer steps at a small learning rate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

THRESHOLD = 0.9     # calibrated confidence a pseudo-label needs
ROUND_STEPS = 300   # optimizer steps per round
ROUND_LR = 3e-4


def pseudo_labels(probs: np.ndarray, threshold: float = THRESHOLD,
                  per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(frame indices, labels)`` of the frames worth a pseudo-label.

    Kept: confidence >= ``threshold``; per predicted class at most ``per_class`` frames
    (default: an equal share of the frames, ``ceil(N / classes)``), the most confident
    first. Sorted by frame index."""
    probs = np.asarray(probs, np.float64)
    if not len(probs):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n, k = probs.shape
    cap = per_class if per_class is not None else math.ceil(n / k)
    label, conf = probs.argmax(axis=1), probs.max(axis=1)
    keep: list[np.ndarray] = []
    for c in range(k):
        idx = np.flatnonzero((label == c) & (conf >= threshold))
        keep.append(idx[np.argsort(-conf[idx], kind="stable")][:cap])
    chosen = np.sort(np.concatenate(keep)).astype(np.int64)
    return chosen, label[chosen].astype(np.int64)


def marginal_entropy(probs: np.ndarray) -> float:
    """Entropy (nats) of the mean predicted class mix: near 0 when a model has collapsed
    onto one class."""
    p = np.asarray(probs, np.float64).mean(axis=0)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def arrays_dataset(frames: np.ndarray, labels: np.ndarray, class_names: list[str],
                   batch_size: int, seed: int, augment: Any = None) -> Any:
    """An in-memory ``tf.data`` training stream, shuffled and augmented like ``retrain``'s."""
    import tensorflow as tf

    from tasks.train.augment import augment_dataset

    ds = tf.data.Dataset.from_tensor_slices((frames.astype(np.float32),
                                             labels.astype(np.int32)))
    ds = ds.shuffle(len(frames), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return augment_dataset(ds, class_names, seed, augment).prefetch(2)


def self_train_round(model: Any, labeled: tuple[np.ndarray, np.ndarray],
                     unlabeled: np.ndarray, temperature: float, class_names: list[str],
                     val: Any, *, seed: int = 0, threshold: float = THRESHOLD,
                     steps: int = ROUND_STEPS, batch_size: int = 64,
                     augment: Any = None) -> tuple[Any, dict[str, Any]]:
    """One round: pseudo-label ``unlabeled`` with ``model`` (calibrated by ``temperature``),
    fine-tune a copy on the labeled frames plus the pseudo-labeled ones. Returns the new
    model and what the round used (None model: nothing cleared the threshold)."""
    from models.calibration import softmax
    from models.network import predict_logits
    from tasks.train.fit import train_cnn

    probs = softmax(predict_logits(model, unlabeled), temperature)
    idx, plabels = pseudo_labels(probs, threshold)
    info = {"threshold": threshold, "pseudo_labeled": int(len(idx)),
            "per_class": np.bincount(plabels, minlength=len(class_names)).tolist()}
    if not len(idx):
        return None, info
    x = np.concatenate([labeled[0], unlabeled[idx]]) if len(labeled[0]) else unlabeled[idx]
    y = np.concatenate([labeled[1], plabels]) if len(labeled[1]) else plabels
    train = arrays_dataset(x, y, class_names, batch_size, seed, augment)
    epochs = 5
    result = train_cnn(train, val, len(class_names), epochs=epochs, seed=seed,
                       min_steps=steps, init_model=model, learning_rate=ROUND_LR,
                       patience=0)
    info["steps"] = result.steps_per_epoch * result.epochs_run
    return result.model, info
