"""Training the CNN: one fit with early stopping, and a bounded hyperparameter search.

Reproducible for a seed: ``keras.utils.set_random_seed`` seeds Python, NumPy and the
backend, the augmenter has its own seeded generator and runs sequentially in the pipeline.
Early stopping watches validation loss and restores the best epoch's weights. The learning
rate follows a cosine decay over the epoch budget (steady, reproducible, and the last
epochs refine instead of bouncing around at a constant rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.network import DEFAULT_PARAMS, build_cnn, compile_cnn

EpochHook = Callable[[int, int, dict[str, float]], None]


@dataclass
class TrainResult:
    model: Any
    params: dict[str, Any]
    epochs_run: int
    best_epoch: int
    history: dict[str, list[float]]
    seconds: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    steps_per_epoch: int = 0


def _callbacks(epochs: int, patience: int, on_epoch: EpochHook | None,
               deadline: float | None = None) -> list[Any]:
    import keras

    class _Hook(keras.callbacks.Callback):
        """Reports each epoch and stops the fit at a deadline (tuning time budget)."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if on_epoch is not None:
                on_epoch(epoch + 1, epochs, {k: float(v) for k, v in (logs or {}).items()})
            if deadline is not None and time.monotonic() > deadline:
                self.model.stop_training = True

    cbs: list[Any] = [_Hook()]
    if patience > 0:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                 restore_best_weights=True))
    return cbs


def steps_plan(natural_steps: int, epochs: int, min_steps: int) -> int:
    """Optimizer steps per epoch: one pass over the data, or more when the whole run would
    otherwise take fewer than ``min_steps`` steps.

    Why: counted in epochs, a folder of ten frames a class trains 30 epochs of 2 steps, 60
    steps in all, and learns nothing. A floor counted in steps trains a small folder as long
    as a large one, while early stopping (per epoch, on validation loss) still guards it."""
    return max(natural_steps, -(-max(min_steps, 0) // max(epochs, 1)))


def train_cnn(train_ds: Any, val_ds: Any, num_classes: int, *, epochs: int = 30,
              seed: int = 0, params: dict[str, Any] | None = None, patience: int = 6,
              on_epoch: EpochHook | None = None, min_steps: int = 0,
              init_model: Any = None, learning_rate: float | None = None) -> TrainResult:
    """Build and fit the CNN on ``tf.data`` datasets; return the best-epoch model.

    ``min_steps``: the floor on optimizer steps (``steps_plan``); ``init_model``: start from
    these weights (fine-tuning a pretrained model; its architecture wins over ``params``);
    ``learning_rate``: the schedule's start instead of the params' one."""
    import keras

    keras.utils.set_random_seed(seed)
    p = {**DEFAULT_PARAMS, **(params or {})}
    if init_model is not None:
        model = keras.models.clone_model(init_model)
        model.set_weights(init_model.get_weights())
    else:
        model = build_cnn(num_classes, **p)
    lr = float(learning_rate if learning_rate is not None else p["learning_rate"])
    natural = int(train_ds.cardinality())
    per_epoch = None
    if natural > 0:  # known length: decay the learning rate to ~0 over the step budget
        per_epoch = steps_plan(natural, epochs, min_steps)
        if per_epoch > natural:
            train_ds = train_ds.repeat()
        compile_cnn(model, keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=per_epoch * epochs, alpha=0.02), p.get("label_smoothing", 0.0))
    elif init_model is not None:
        compile_cnn(model, lr, p.get("label_smoothing", 0.0))
    start = time.monotonic()
    hist = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, shuffle=False,
                     steps_per_epoch=per_epoch if per_epoch != natural else None,
                     callbacks=_callbacks(epochs, patience, on_epoch))
    h = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    losses = h.get("val_loss") or h.get("loss") or [0.0]
    best = int(min(range(len(losses)), key=losses.__getitem__)) + 1
    return TrainResult(model, p, len(losses), best, h, time.monotonic() - start,
                       steps_per_epoch=per_epoch or natural)


def tune_cnn(train_ds: Any, val_ds: Any, num_classes: int, *, epochs: int = 30,
             seed: int = 0, budget_seconds: float = 600.0, max_trials: int = 8,
             directory: str | None = None, patience: int = 4,
             on_epoch: EpochHook | None = None,
             on_trial: Callable[[int, dict[str, Any], float | None], None] | None = None
             ) -> TrainResult:
    """Random search (KerasTuner) over filters, dense width, dropout and learning rate.

    Bounded twice: at most ``max_trials`` trials, and no new trial (and no further epoch)
    once ``budget_seconds`` have passed. The best trial's model is retrained from scratch
    with its hyperparameters for the full epoch budget (so the result is reproducible)."""
    import tempfile

    import keras
    import keras_tuner as kt

    keras.utils.set_random_seed(seed)
    start = time.monotonic()
    deadline = start + budget_seconds

    def build(hp: Any) -> Any:
        width = hp.Choice("width", [16, 32, 48])
        return build_cnn(
            num_classes,
            filters=(width, 2 * width, 3 * width),
            dense=hp.Choice("dense", [64, 128, 256]),
            dropout=hp.Float("dropout", 0.1, 0.5, step=0.1),
            learning_rate=hp.Float("learning_rate", 5e-4, 5e-3, sampling="log"),
            stem_pool=hp.Boolean("stem_pool", default=True),
        )

    class BudgetedSearch(kt.RandomSearch):
        """Random search that stops starting trials when the time budget is spent."""

        def pre_create_trial(self) -> None:
            if time.monotonic() > deadline:
                self.oracle.max_trials = len(self.oracle.trials)

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            if on_trial is not None:
                on_trial(len(self.oracle.trials), dict(trial.hyperparameters.values),
                         trial.score)

    with tempfile.TemporaryDirectory(prefix="posebatch-tune-") as tmp:
        tuner = BudgetedSearch(build, objective="val_loss", max_trials=max_trials, seed=seed,
                               directory=directory or tmp, project_name="cnn",
                               overwrite=True)
        tuner.search(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, shuffle=False,
                     callbacks=_callbacks(epochs, patience, None, deadline))
        trials = [{"trial": t.trial_id, "hyperparameters": dict(t.hyperparameters.values),
                   "val_loss": t.score} for t in tuner.oracle.trials.values()]
        best_hp = tuner.get_best_hyperparameters(1)[0].values
    width = int(best_hp["width"])
    params = {"filters": [width, 2 * width, 3 * width], "dense": int(best_hp["dense"]),
              "dropout": float(best_hp["dropout"]),
              "learning_rate": float(best_hp["learning_rate"]),
              "stem_pool": bool(best_hp["stem_pool"])}
    result = train_cnn(train_ds, val_ds, num_classes, epochs=epochs, seed=seed, params=params,
                       on_epoch=on_epoch)
    result.trials = trials
    result.seconds = time.monotonic() - start
    return result


def predict_scan(model: Any, scan: Any, idx: Any, batch_size: int = 256,
                 max_frames: int = 4096) -> tuple[Any, Any]:
    """Logits and labels of every frame of the given files, streamed from disk in batches
    (memory holds one batch of heatmaps, not the split)."""
    import numpy as np

    from models.network import predict_logits
    from tasks.train.dataset import iter_frames

    paths = [scan.files[i].file.path for i in idx]
    labels = [scan.files[i].file.label for i in idx]
    n_out = int(model.output_shape[-1])
    outs, ys, buf = [], [], []
    for frame, label in iter_frames(paths, labels, max_frames):
        buf.append(frame)
        ys.append(label)
        if len(buf) == batch_size:
            outs.append(predict_logits(model, np.stack(buf), batch_size))
            buf = []
    if buf:
        outs.append(predict_logits(model, np.stack(buf), batch_size))
    logits = np.concatenate(outs) if outs else np.zeros((0, n_out), np.float32)
    return logits, np.asarray(ys, dtype=np.int64)


def shifted_split(scan: Any, idx: Any, seed: int, config: Any = None, cap: int = 2048,
                  max_frames: int = 4096) -> tuple[Any, Any]:
    """The frames of ``idx`` (at most about ``cap``, files sampled with ``seed``) moved by the
    training augmentations without flips (``tasks.train.augment.shifted_copy``): the shifted
    evaluation set that calibration and the promotion gate look at. Same seed, same frames."""
    import numpy as np

    from tasks.train.augment import shifted_copy
    from tasks.train.dataset import load_frames

    idx = list(idx)
    frames_per_file = max(1, scan.n_frames // max(1, len(scan.files)))
    if len(idx) * frames_per_file > cap:
        rng = np.random.default_rng([seed, 7])
        idx = sorted(rng.choice(idx, max(1, cap // frames_per_file), replace=False).tolist())
    frames, labels = load_frames(scan, idx, max_frames)
    if not len(labels):
        return frames, labels
    return shifted_copy(frames, labels, scan.class_names, seed, config), labels


def training_datasets(scan: Any, train_idx: Any, val_idx: Any, *, batch_size: int, seed: int,
                      augment: Any, max_frames: int = 4096, cache_limit: int = 2 << 30
                      ) -> tuple[Any, Any]:
    """The augmented training stream and the validation stream of files of a scan, cached in
    memory below ``cache_limit`` bytes (train + val): what every fit and search trains on."""
    from tasks.train.augment import augment_dataset
    from tasks.train.dataset import make_tf_dataset

    frames = sum(scan.files[i].n_frames for i in list(set(train_idx)) + list(val_idx))
    cache = frames * 17 * 64 * 48 * 4 <= cache_limit
    train_ds = make_tf_dataset(scan, train_idx, batch_size, shuffle=True, seed=seed,
                               cache=cache, max_frames=max_frames,
                               augment=lambda ds: augment_dataset(ds, scan.class_names, seed,
                                                                  augment))
    val_ds = make_tf_dataset(scan, val_idx, 256, cache=cache, max_frames=max_frames)
    return train_ds, val_ds


def fit_files(scan: Any, train_idx: Any, val_idx: Any, *, epochs: int, seed: int,
              batch_size: int, augment: Any, max_frames: int = 4096, min_steps: int = 0,
              params: dict[str, Any] | None = None, init_model: Any = None,
              learning_rate: float | None = None, on_epoch: EpochHook | None = None,
              cache_limit: int = 2 << 30) -> TrainResult:
    """``train_cnn`` on files of a scan, streamed (cached in memory below ``cache_limit``
    bytes) and augmented like every ``retrain``: the one recipe for training from scratch,
    pretraining on synthetic frames and fine-tuning on a user's."""
    train_ds, val_ds = training_datasets(scan, train_idx, val_idx, batch_size=batch_size,
                                         seed=seed, augment=augment, max_frames=max_frames,
                                         cache_limit=cache_limit)
    return train_cnn(train_ds, val_ds, len(scan.class_names), epochs=epochs, seed=seed,
                     params=params, on_epoch=on_epoch, min_steps=min_steps,
                     init_model=init_model, learning_rate=learning_rate)
