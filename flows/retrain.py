"""The retraining flow: labeled folders in, a registered (and maybe promoted) model out.

Orchestration only; the work lives in ``tasks/`` and ``models/``. One run:

1. ``scan-labeled``: list ``<class>/**/*.npy``, validate every file with the shared validator
   (rejections reported, not fatal), hash contents (data fingerprint), decode keypoint
   features, split train/val/test by group (``tasks/train/dataset.py``);
2. ``train-cnn``: fit the CNN on a ``tf.data`` stream with augmentation and early stopping,
   or ``--tune`` a bounded KerasTuner search first (``tasks/train/fit.py``);
3. ``fit-classical``: logistic regression, gradient boosting and the majority baseline on
   the same split (``models/features.py``);
4. ``evaluate-cnn``: temperature on the validation split, test metrics, ECE before/after;
5. ``challenge-production``: the current production model re-evaluated on the NEW test split;
6. ``register-model``: save model + metadata + report + confusion PNG, then promote if the
   gate says so (``tasks/train/gate.py``); artifacts for the UI.

Tasks are coarse (one per stage) and take ``cache_policy=NO_CACHE``: their inputs are models
and arrays, which Prefect should neither hash nor persist.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.settings import get_settings
from models.network import INPUT_LAYOUT
from models.registry import ANY, ProductionChanged, Registry, library_versions, load_model
from tasks.train.augment import AugmentConfig, augment_dataset
from tasks.train.dataset import (
    GROUP_RULES,
    Scan,
    Split,
    class_distribution,
    data_fingerprint,
    features_of,
    scan_labeled,
    split_scan,
)
from tasks.train.evaluate import (
    classification_metrics,
    confusion_png,
    confusion_table,
    remap_probabilities,
)
from tasks.train.gate import (
    PROMOTE_POLICIES,
    decide_promotion,
    f1_of,
    fair_test_files,
    fairness_note,
)
from tasks.train.report import RetrainSummary, render_report

CACHE_LIMIT_BYTES = 2 << 30  # cache decoded frames in memory below this size (train + val)
FRAME_BYTES = 17 * 64 * 48 * 4

# -- progress for an in-process caller (the CLI) --------------------------------------------
_listeners: list[Callable[[dict[str, Any]], None]] = []


def add_progress_listener(fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
    """Call ``fn(event)`` on each stage and epoch; returns a remover. Events are dicts with
    ``stage`` and, for epochs, ``epoch``, ``epochs`` and ``logs``."""
    _listeners.append(fn)
    return lambda: _listeners.remove(fn) if fn in _listeners else None


def _emit(event: dict[str, Any]) -> None:
    for fn in list(_listeners):
        fn(event)
    if not _listeners:  # nobody shows progress: put epoch lines in the run log instead
        if "epoch" in event:
            logs = " ".join(f"{k}={v:.4f}" for k, v in sorted(event["logs"].items()))
            get_run_logger().info("epoch %d/%d %s", event["epoch"], event["epochs"], logs)


# recorded in each trained version's metadata (models.registry.library_versions)
LIBRARIES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "keras-tuner",
             "prefect")


# -- tasks ----------------------------------------------------------------------------------
@task(name="scan-labeled", cache_policy=NO_CACHE)
def scan_task(labeled_dir: str, group_by: str, max_frames: int, seed: int
              ) -> tuple[Scan, Split]:
    """Validate and featurise the labeled files, then split them by group."""
    _emit({"stage": "scan", "message": f"scanning {labeled_dir}"})
    scan = scan_labeled(labeled_dir, group_by, max_frames,
                        progress=lambda i, n: _emit({"stage": "scan", "done": i, "total": n}))
    if len(scan.class_names) < 2:
        raise ValueError(f"{labeled_dir}: need at least 2 class folders with valid .npy files, "
                         f"found {len(scan.class_names)} (rejected files: {len(scan.rejected)})")
    split = split_scan(scan.labels(), scan.groups(), len(scan.class_names), seed=seed)
    if not split.train or not split.val:
        raise ValueError(f"{labeled_dir}: too few labeled files to split into train and "
                         "validation sides (need at least 3 files per class)")
    return scan, split


@task(name="train-cnn", cache_policy=NO_CACHE)
def train_task(scan: Scan, split: Split, epochs: int, seed: int, batch_size: int,
               tune: bool, tune_budget: float, tune_trials: int, max_frames: int,
               augment: AugmentConfig) -> Any:
    """Fit the CNN (optionally after a bounded search) on the streamed train split."""
    from tasks.train.dataset import make_tf_dataset
    from tasks.train.fit import train_cnn, tune_cnn

    frames = sum(scan.files[i].n_frames for i in split.train + split.val)
    cache = frames * FRAME_BYTES <= CACHE_LIMIT_BYTES
    train_ds = make_tf_dataset(scan, split.train, batch_size, shuffle=True, seed=seed,
                               cache=cache, max_frames=max_frames,
                               augment=lambda ds: augment_dataset(ds, scan.class_names, seed,
                                                                  augment))
    val_ds = make_tf_dataset(scan, split.val, 256, cache=cache, max_frames=max_frames)

    def on_epoch(e: int, n: int, logs: dict[str, float]) -> None:
        _emit({"stage": "train", "epoch": e, "epochs": n, "logs": logs})

    n = len(scan.class_names)
    if tune:
        _emit({"stage": "tune", "message": f"hyperparameter search, budget {tune_budget:.0f} s"})

        def on_trial(i: int, hp: dict[str, Any], score: float | None) -> None:
            _emit({"stage": "tune", "trial": i, "hyperparameters": hp, "val_loss": score})

        return tune_cnn(train_ds, val_ds, n, epochs=epochs, seed=seed,
                        budget_seconds=tune_budget, max_trials=tune_trials,
                        on_epoch=on_epoch, on_trial=on_trial)
    _emit({"stage": "train", "message": f"training the CNN for up to {epochs} epochs"
           f"{' (frames cached in memory)' if cache else ' (streamed from disk)'}"})
    return train_cnn(train_ds, val_ds, n, epochs=epochs, seed=seed, on_epoch=on_epoch)


@task(name="fit-classical", cache_policy=NO_CACHE)
def classical_task(scan: Scan, split: Split, seed: int) -> dict[str, dict[str, Any]]:
    """The scikit-learn methods and the majority baseline, trained on the same train split."""
    from models.features import fit_predict

    _emit({"stage": "classical", "message": "fitting logistic regression, gradient boosting"})
    x_tr, y_tr = features_of(scan, split.train)
    x_te, y_te = features_of(scan, split.test)
    out: dict[str, dict[str, Any]] = {}
    for name in ("logreg", "hgb", "majority"):
        t0 = time.monotonic()
        probs, _ = fit_predict(name, x_tr, y_tr, x_te, len(scan.class_names), seed)
        metrics = classification_metrics(y_te, probs, scan.class_names)
        metrics["seconds"] = time.monotonic() - t0
        out[name] = metrics
    return out


@task(name="evaluate-cnn", cache_policy=NO_CACHE)
def evaluate_task(model: Any, scan: Scan, split: Split, max_frames: int,
                  augment: AugmentConfig | None = None, seed: int = 0) -> dict[str, Any]:
    """Fit the temperature on validation, clean and shifted (a model calibrated only on its
    own renderer is over-confident on any other); score the calibrated CNN on the test
    groups, clean and shifted; fit the out-of-distribution reference (``models/ood.py``)."""
    import numpy as np

    from models.calibration import expected_calibration_error, fit_temperature, softmax
    from models.network import predict_logits
    from models.ood import fit_reference
    from tasks.train.fit import predict_scan, shifted_split

    _emit({"stage": "evaluate", "message": "calibrating and evaluating on the test split"})
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
    return {
        "monitor": _monitor_reference(scan, split, softmax(test_logits, temperature), test_y,
                                      max_frames),
        "metrics": metrics,
        "shift_metrics": shift_metrics,
        "ood": fit_reference(x_train, y_train, features_of(scan, split.val)[0]),
        "calibration": {
            "temperature": temperature,
            "fitted_on": "validation split, clean and shifted",
            "val_ece_before": expected_calibration_error(softmax(val_logits), val_y),
            "val_ece_after": expected_calibration_error(softmax(val_logits, temperature), val_y),
            "val_shift_ece_after": expected_calibration_error(
                softmax(sv_logits, temperature), sv_y) if len(sv_y) else None,
            "test_ece_before": expected_calibration_error(softmax(test_logits), test_y)
            if len(test_y) else None,
            "test_ece_after": metrics["ece"],
            "test_shift_ece_after": shift_metrics["ece"],
        },
    }


@task(name="challenge-production", cache_policy=NO_CACHE)
def champion_task(registry_dir: str, scan: Scan, split: Split, max_frames: int,
                  challenger: Any = None, temperature: float = 1.0,
                  augment: AugmentConfig | None = None, seed: int = 0
                  ) -> dict[str, Any] | None:
    """Re-evaluate the current production model on the new test split (None: no production).

    Its classes are mapped by name onto the new class list; a class it does not know scores
    zero recall, which is fair: it cannot predict it. Test groups the production model was
    trained or calibrated on (its metadata's split) would flatter it, so both models are
    compared on the test files of the other groups only; the result says how many were left
    out (``excluded_files``) and, when that is a strict subset of the test split, the
    challenger's score on it (otherwise its test-split score already covers the same files).
    Both are also scored on one shifted copy of those files (``shift_metrics``)."""
    from models.calibration import softmax
    from models.network import predict_logits
    from tasks.train.fit import predict_scan, shifted_split

    registry = Registry(registry_dir)
    version = registry.production_version()
    if version is None:
        return None
    _emit({"stage": "challenge", "message": f"re-evaluating production model {version}"})
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


def _shift_scores(evaluation: dict[str, Any], champion: dict[str, Any] | None
                  ) -> dict[str, dict[str, Any]]:
    """Scores on the shifted test split, for the report: the challenger on the whole split,
    and where production was re-evaluated, both on the files the gate compared."""
    out = {"cnn": _slim(evaluation["shift_metrics"])}
    if champion and "shift_metrics" in champion:
        out["production"] = _slim(champion["shift_metrics"])
        out["cnn (gate files)"] = _slim(champion["challenger_shift_metrics"])
    return out


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(registry_dir: str, model: Any, summary: RetrainSummary, promote: bool,
                  reason: str, expected_production: Any = ANY) -> dict[str, Any]:
    """Save the version (model, metadata, report, confusion PNG); promote if decided, and
    only if production is still ``expected_production``, the version the gate compared
    against: a rollback or another promotion made during training is never overwritten."""
    registry = Registry(registry_dir)
    with tempfile.TemporaryDirectory(prefix="posebatch-confusion-") as tmp:
        png = confusion_png(summary["methods"]["cnn"]["confusion"], summary["class_names"],
                            Path(tmp) / "confusion.png",
                            title="CNN confusion matrix (held-out test groups)")
        png_bytes = png.read_bytes()
    metadata = {
        "class_names": summary["class_names"],
        "input_layout": INPUT_LAYOUT,
        "output": "logits",
        "temperature": summary["calibration"]["temperature"],
        "ood": summary["ood"],
        "monitor": summary.get("monitor"),  # the monitoring reference (tasks/monitor)
        "metrics": {"test": _slim(summary["methods"]["cnn"]),
                    "shift": summary["shift"],
                    "methods": {k: _slim(v) for k, v in summary["methods"].items()},
                    "calibration": summary["calibration"]},
        "params": {**summary["training"]["params"], "epochs": summary["training"]["epochs"],
                   "epochs_run": summary["training"]["epochs_run"],
                   "seed": summary["training"]["seed"],
                   "batch_size": summary["training"]["batch_size"],
                   "tuned": bool(summary["training"].get("trials")),
                   "augment": summary["training"]["augment"]},
        "split": {k: summary["split"][k] for k in ("group_by", "method", "note", "groups",
                                                   "frames")},
        "data_fingerprint": summary["data"]["fingerprint"],
        # training-split frames per class: the drift report's reference mix
        "class_distribution": summary["data"]["class_distribution"],
        "data": {k: summary["data"][k] for k in ("labeled_dir", "files", "frames")}
        | {"rejected": len(summary["data"]["rejected"])},
        "library_versions": library_versions(LIBRARIES),
        "source": "retrain",
    }
    # The report names the version it will get; register() allocates it, so render after.
    entry = registry.register(model, metadata, report=None,
                              extra_files={"confusion.png": png_bytes})
    if promote:
        try:
            registry.set_production(entry.version, reason, action="promote",
                                    expected_production=expected_production)
        except ProductionChanged as exc:
            promote, reason = False, f"not promoted: {exc} (during training)"
    summary["version"] = entry.version
    summary["promoted"] = promote
    summary["promotion_reason"] = reason
    (entry.path / "report.md").write_text(render_report(summary), encoding="utf-8")
    return {"version": entry.version, "path": str(entry.path), "promoted": promote,
            "reason": reason}


def _monitor_reference(scan: Scan, split: Split, probs: Any, labels: Any,
                       max_frames: int) -> dict[str, Any]:
    """What the model's runs are compared with (``tasks/monitor/reference.py``): the test
    split's heatmap statistics (streamed from disk) and calibrated confidences, and the
    training split's class mix."""
    from tasks.monitor.inputs import InputStats
    from tasks.monitor.reference import build_reference
    from tasks.train.dataset import iter_frames

    paths = [scan.files[i].file.path for i in split.test]
    stats = InputStats().add_stream(frame for frame, _ in iter_frames(
        paths, [0] * len(paths), max_frames))
    return build_reference(stats, probs, class_distribution(scan, split.train),
                           scan.class_names, labels)


def _slim(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without bulky parts, for metadata tables."""
    return {k: v for k, v in metrics.items() if k not in ("per_class",)}


# -- the flow -------------------------------------------------------------------------------
@flow(name="retrain", log_prints=False)
def retrain_flow(labeled_dir: str | None = None, registry_dir: str | None = None,
                 epochs: int = 30, seed: int = 0, tune: bool = False,
                 tune_budget_seconds: float = 600.0, tune_max_trials: int = 8,
                 promote: str = "if-better", margin: float | None = None,
                 group_by: str = "subject", batch_size: int = 64,
                 max_frames_per_file: int | None = None,
                 data_root: str | None = None) -> dict[str, Any]:
    """Train, compare, calibrate and evaluate a model on labeled folders; register it and
    promote it per ``promote`` (``if-better``: only if its test macro-F1 is at least the
    production model's on the same split plus ``margin``). Returns the run summary."""
    t_start = time.monotonic()
    settings = get_settings(data_root)
    labeled = str(labeled_dir or settings.labeled_dir)
    registry = str(registry_dir or settings.registry_dir)
    margin = settings.promotion_margin if margin is None else float(margin)
    max_frames = max_frames_per_file or settings.max_frames_per_file
    _check_options(promote, group_by, epochs)
    logger = get_run_logger()
    augment = AugmentConfig()

    scan, split = scan_task(labeled, group_by, max_frames, seed)
    frames = _log_split(scan, split)
    result = train_task(scan, split, epochs, seed, batch_size, tune, tune_budget_seconds,
                        tune_max_trials, max_frames, augment)
    classical = classical_task(scan, split, seed)
    evaluation = evaluate_task(result.model, scan, split, max_frames, augment, seed)
    evaluation["metrics"]["seconds"] = result.seconds
    champion = champion_task(registry, scan, split, max_frames, result.model,
                             evaluation["calibration"]["temperature"], augment, seed)
    methods = {"cnn": evaluation["metrics"], **classical}
    if champion and "metrics" in champion:
        methods["production"] = champion["metrics"]
        methods["production"]["label"] = champion["version"]
    ok, reason = _gate(promote, margin, evaluation, champion, len(split.test))
    summary: RetrainSummary = {
        "created_at": datetime.now(UTC).isoformat(),
        "class_names": scan.class_names,
        "data": _data_summary(labeled, scan, split),
        "split": {"group_by": group_by, "method": split.method, "note": split.note,
                  "groups": split.groups, "frames": frames},
        "training": _training_summary(result, epochs, seed, batch_size, augment,
                                      tune_budget_seconds),
        "methods": methods,
        "calibration": evaluation["calibration"],
        "shift": _shift_scores(evaluation, champion),
        "ood": evaluation["ood"],
        "monitor": evaluation["monitor"],
        "champion": _champion_summary(champion),
        "promotion_policy": promote, "margin": margin,
        "promoted": ok, "promotion_reason": reason,
    }
    # The gate's verdict holds against the production it compared with (if-better only).
    expected = (champion["version"] if champion else None) if promote == "if-better" else ANY
    reg = register_task(registry, result.model, summary, ok, reason, expected)
    ok, reason = reg["promoted"], reg["reason"]
    logger.info("registered %s (%s): %s", reg["version"],
                "promoted" if ok else "not promoted", reason)
    _artifacts(summary, reg["version"])
    return _result(summary, reg, registry, scan, split, result.epochs_run,
                   seconds=round(time.monotonic() - t_start, 1))


# -- the flow's steps -----------------------------------------------------------------------
def _check_options(promote: str, group_by: str, epochs: int) -> None:
    """Refuse bad options before any work: a deployment run gets them unchecked."""
    if promote not in PROMOTE_POLICIES:
        raise ValueError(f"--promote must be one of {', '.join(PROMOTE_POLICIES)}")
    if group_by not in GROUP_RULES:
        raise ValueError(f"--group-by must be one of {', '.join(GROUP_RULES)}")
    if epochs < 1:
        raise ValueError("--epochs must be at least 1")


def _log_split(scan: Scan, split: Split) -> dict[str, int]:
    """Log what was scanned and how it was split; returns the frames per side."""
    logger = get_run_logger()
    frames = {side: sum(scan.files[i].n_frames for i in split.side(side))
              for side in ("train", "val", "test")}
    logger.info("%d classes, %d files (%d frames) accepted, %d rejected; %s split %s",
                len(scan.class_names), len(scan.files), scan.n_frames, len(scan.rejected),
                split.method, frames)
    if split.note:
        logger.warning("split: %s", split.note)
    return frames


def _gate(promote: str, margin: float, evaluation: dict[str, Any],
          champion: dict[str, Any] | None, n_test: int) -> tuple[bool, str]:
    """Apply the promotion gate (``tasks/train/gate.py``) to this run's scores.

    When production was re-evaluated on a subset of the test split (groups it never trained
    on), the challenger's score on that same subset is the one compared."""
    challenger_f1 = evaluation["metrics"].get("macro_f1")
    if champion and "challenger_metrics" in champion:  # the same files for both models
        challenger_f1 = champion["challenger_metrics"].get("macro_f1")
        if champion["excluded_files"]:
            get_run_logger().info("gate: %d test file(s) of groups the production model "
                                  "trained on left out of the comparison",
                                  champion["excluded_files"])
    ok, reason = decide_promotion(
        promote, challenger_f1,
        champion["metrics"].get("macro_f1") if champion and "metrics" in champion else None,
        margin, has_production=champion is not None,
        champion_error=champion.get("error") if champion else None,
        challenger_shift_f1=f1_of(champion, "challenger_shift_metrics"),
        champion_shift_f1=f1_of(champion, "shift_metrics"))
    if promote == "if-better" and champion and "metrics" in champion:
        reason += fairness_note(champion, n_test)
    return ok, reason


def _data_summary(labeled: str, scan: Scan, split: Split) -> dict[str, Any]:
    """What was trained on: the folder, counts, rejections and the data fingerprint."""
    return {"labeled_dir": labeled, "files": len(scan.files), "frames": scan.n_frames,
            "rejected": scan.rejected, "ignored": scan.ignored,
            "fingerprint": data_fingerprint(scan),
            "class_distribution": class_distribution(scan, split.train)}


def _training_summary(result: Any, epochs: int, seed: int, batch_size: int,
                      augment: AugmentConfig, tune_budget_seconds: float) -> dict[str, Any]:
    """How the CNN was trained: epochs asked and run, parameters, augmentation, tuning."""
    return {"epochs": epochs, "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch, "seed": seed, "batch_size": batch_size,
            "params": result.params, "seconds": result.seconds,
            "augment": augment.as_dict(), "trials": result.trials,
            "tune_budget_seconds": tune_budget_seconds}


def _champion_summary(champion: dict[str, Any] | None) -> dict[str, Any] | None:
    """The production model's part in the summary: which version, and what it left out."""
    if not champion:
        return None
    return {"version": champion["version"], "error": champion.get("error"),
            "excluded_files": champion.get("excluded_files", 0),
            "note": champion.get("note", "")}


def _result(summary: RetrainSummary, reg: dict[str, Any], registry: str, scan: Scan,
            split: Split, epochs_run: int, seconds: float) -> dict[str, Any]:
    """The flow's return value (the CLI prints it): the version, the verdict, the scores."""
    return {
        "ok": True,
        "version": reg["version"],
        "path": reg["path"],
        "promoted": summary["promoted"],
        "reason": summary["promotion_reason"],
        "production": Registry(registry).production_version(),
        "class_names": scan.class_names,
        "files": len(scan.files),
        "frames": scan.n_frames,
        "rejected": len(scan.rejected),
        "split": {"method": split.method, "note": split.note,
                  "frames": summary["split"]["frames"]},
        "metrics": {name: {k: m.get(k) for k in ("accuracy", "macro_f1", "ece")}
                    for name, m in summary["methods"].items()},
        "shift_metrics": {name: {k: m.get(k) for k in ("accuracy", "macro_f1", "ece")}
                          for name, m in summary["shift"].items()},
        "temperature": summary["calibration"]["temperature"],
        "epochs_run": epochs_run,
        "data_fingerprint": summary["data"]["fingerprint"],
        "seconds": seconds,
    }


def _artifacts(summary: RetrainSummary, version: str) -> None:
    """The report and the confusion matrix as Prefect artifacts (shown in the UI)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(key="retrain-report", markdown=render_report(summary),
                             description=f"Retraining report for model {version}")
    create_table_artifact(key="retrain-confusion",
                          table=confusion_table(summary["methods"]["cnn"]["confusion"],
                                                summary["class_names"]),
                          description=f"Confusion matrix of {version} on the test split "
                                      "(rows: true class)")
