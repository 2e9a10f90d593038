"""Scoring a trained model for the gate: the challenger calibrated and evaluated on its own
splits, and the production model re-evaluated on the NEW test split beside it.

Plain functions over models and scans (no Prefect); the retrain flow wraps each in a task.
TensorFlow is imported inside, when a model is actually scored.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from models.calibration import expected_calibration_error, softmax
from models.registry import Registry, load_model
from tasks.train.dataset import Scan, Split, features_of
from tasks.train.evaluate import classification_metrics, remap_probabilities
from tasks.train.gate import fair_test_files


def evaluate_challenger(model: Any, scan: Scan, split: Split, max_frames: int,
                        augment: Any = None, seed: int = 0) -> dict[str, Any]:
    """Fit the temperature on validation, clean and shifted (a model calibrated only on its
    own renderer is over-confident on any other); score the calibrated CNN on the test
    groups, clean and shifted; fit the out-of-distribution reference (``models/ood.py``)."""
    from models.calibration import fit_temperature
    from models.network import predict_logits
    from models.ood import fit_reference
    from tasks.train.fit import predict_scan, shifted_split

    t0 = time.monotonic()
    val_logits, val_y = predict_scan(model, scan, split.val, max_frames=max_frames)
    sv_frames, sv_y = shifted_split(scan, split.val, seed, augment, max_frames=max_frames)
    sv_logits = predict_logits(model, sv_frames)
    temperature = fit_temperature(np.concatenate([val_logits, sv_logits]),
                                  np.concatenate([val_y, sv_y]))
    test_logits, test_y = predict_scan(model, scan, split.test, max_frames=max_frames)
    metrics = classification_metrics(test_y, softmax(test_logits, temperature),
                                     scan.class_names)
    st_frames, st_y = shifted_split(scan, split.test, seed, augment, max_frames=max_frames)
    shift_metrics = classification_metrics(
        st_y, softmax(predict_logits(model, st_frames), temperature), scan.class_names)
    metrics["seconds"] = time.monotonic() - t0
    x_train, y_train = features_of(scan, split.train)
    ece = expected_calibration_error
    test_probs = softmax(test_logits, temperature)
    return {
        "monitor": monitor_reference(scan, split, test_probs, test_y, max_frames),
        "test_probabilities": test_probs,   # the run's monitoring row (not saved)
        "metrics": metrics,
        "shift_metrics": shift_metrics,
        "ood": fit_reference(x_train, y_train, features_of(scan, split.val)[0]),
        "calibration": {
            "temperature": temperature,
            "fitted_on": "validation split, clean and shifted",
            "val_ece_before": ece(softmax(val_logits), val_y),
            "val_ece_after": ece(softmax(val_logits, temperature), val_y),
            "val_shift_ece_after": ece(softmax(sv_logits, temperature), sv_y)
            if len(sv_y) else None,
            "test_ece_before": ece(softmax(test_logits), test_y) if len(test_y) else None,
            "test_ece_after": metrics["ece"],
            "test_shift_ece_after": shift_metrics["ece"],
        },
    }


def monitor_reference(scan: Scan, split: Split, probs: Any, labels: Any,
                      max_frames: int) -> dict[str, Any]:
    """What the model's runs are compared with (``tasks/monitor/reference.py``): the test
    split's heatmap statistics (streamed from disk) and calibrated confidences, and the
    training split's class mix."""
    from tasks.monitor.inputs import InputStats
    from tasks.monitor.reference import build_reference
    from tasks.train.dataset import class_distribution, iter_frames

    paths = [scan.files[i].file.path for i in split.test]
    stats = InputStats().add_stream(frame for frame, _ in iter_frames(
        paths, [0] * len(paths), max_frames))
    return build_reference(stats, probs, class_distribution(scan, split.train),
                           scan.class_names, labels)


def challenge_production(registry_dir: str, scan: Scan, split: Split, max_frames: int,
                         challenger: Any = None, temperature: float = 1.0,
                         augment: Any = None, seed: int = 0) -> dict[str, Any] | None:
    """Re-evaluate the current production model on the new test split (None: no production).

    Its classes are mapped by name onto the new class list; a class it does not know scores
    zero recall, which is fair: it cannot predict it. Test groups the production model was
    trained or calibrated on (its metadata's split) would flatter it, so both models are
    compared on the test files of the other groups only; the result says how many were left
    out (``excluded_files``) and, when that is a strict subset of the test split, the
    challenger's score on it (otherwise its test-split score already covers the same files).
    Both are also scored on one shifted copy of those files (``shift_metrics``)."""
    from models.network import predict_logits
    from tasks.train.fit import predict_scan, shifted_split

    registry = Registry(registry_dir)
    version = registry.production_version()
    if version is None:
        return None
    try:
        entry = registry.get(version)
        fair, left_out, note = fair_test_files(split.test, [f.file.group for f in scan.files],
                                               entry.metadata)
        model = load_model(entry)
        logits, y = predict_scan(model, scan, fair, max_frames=max_frames)
        s_frames, s_y = shifted_split(scan, fair, seed, augment, max_frames=max_frames)
        s_logits = predict_logits(model, s_frames)
    except Exception as exc:  # a broken champion must not crash the run: report it
        return {"version": version, "error": f"{type(exc).__name__}: {exc}"[:300]}

    def scored(lg: Any, labels: Any, t: float, names: list[str]) -> dict[str, Any]:
        probs = remap_probabilities(softmax(lg, t), names, scan.class_names)
        return classification_metrics(labels, probs, scan.class_names)

    out: dict[str, Any] = {"version": version,
                           "metrics": scored(logits, y, entry.temperature, entry.class_names),
                           "shift_metrics": scored(s_logits, s_y, entry.temperature,
                                                   entry.class_names),
                           "excluded_files": left_out, "note": note}
    if challenger is not None:  # the same shifted frames for both models
        out["challenger_shift_metrics"] = scored(predict_logits(challenger, s_frames), s_y,
                                                 temperature, scan.class_names)
    if challenger is not None and len(fair) < len(split.test):  # else: evaluate_task's score
        c_logits, c_y = predict_scan(challenger, scan, fair, max_frames=max_frames)
        out["challenger_metrics"] = scored(c_logits, c_y, temperature, scan.class_names)
    return out


def target_scores(challenger: Any, temperature: float, registry_dir: str,
                  frames: np.ndarray, labels: np.ndarray, class_names: list[str]
                  ) -> dict[str, Any] | None:
    """Challenger and production on the target-domain test set (the held-out share of the
    labels fed back; None when there is none): the gate's evidence that a model is better
    on the heatmaps users actually have, not only on the labeled folder's test split."""
    from models.network import predict_logits

    if not len(labels):
        return None
    out: dict[str, Any] = {"frames": int(len(labels)), "challenger": classification_metrics(
        labels, softmax(predict_logits(challenger, frames), temperature), class_names)}
    registry = Registry(registry_dir)
    version = registry.production_version()
    if version is not None:
        try:
            entry = registry.get(version)
            probs = remap_probabilities(
                softmax(predict_logits(load_model(entry), frames), entry.temperature),
                entry.class_names, class_names)
            out["production"] = {**classification_metrics(labels, probs, class_names),
                                 "label": version}
        except Exception as exc:  # reported; the gate then refuses if-better
            out["production"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out
