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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.runtime.events import emit_model_promoted
from flows.runtime.progress import emit_stage
from flows.settings import get_settings
from models.network import INPUT_LAYOUT
from models.registry import ANY, ProductionChanged, Registry, library_versions
from tasks.train.augment import AugmentConfig, augment_dataset
from tasks.train.challenge import challenge_production, evaluate_challenger
from tasks.train.choices import check_retrain_options
from tasks.train.dataset import Scan, Split, features_of, scan_labeled, split_scan
from tasks.train.evaluate import classification_metrics, confusion_png, confusion_table
from tasks.train.gate import gate_verdict
from tasks.train.report import RetrainSummary, render_report
from tasks.train.summary import (
    champion_summary,
    data_summary,
    model_metadata,
    retrain_result,
    shift_scores,
    training_summary,
)

CACHE_LIMIT_BYTES = 2 << 30  # cache decoded frames in memory below this size (train + val)
FRAME_BYTES = 17 * 64 * 48 * 4

def _emit(event: dict[str, Any]) -> None:
    """Progress for the CLI (``flows/runtime/progress.py``); with nobody listening, epoch
    lines go to the run log instead."""
    if not emit_stage(event) and "epoch" in event:
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
    """Calibrate and score the new CNN, clean and shifted (``tasks/train/challenge.py``)."""
    _emit({"stage": "evaluate", "message": "calibrating and evaluating on the test split"})
    return evaluate_challenger(model, scan, split, max_frames, augment, seed)


@task(name="challenge-production", cache_policy=NO_CACHE)
def champion_task(registry_dir: str, scan: Scan, split: Split, max_frames: int,
                  challenger: Any = None, temperature: float = 1.0,
                  augment: AugmentConfig | None = None, seed: int = 0
                  ) -> dict[str, Any] | None:
    """Production re-evaluated beside the challenger on the files fair to both (None: no
    production model); see ``tasks/train/challenge.py``."""
    _emit({"stage": "challenge", "message": "re-evaluating the production model"})
    return challenge_production(registry_dir, scan, split, max_frames, challenger,
                                temperature, augment, seed)


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
    metadata = model_metadata(summary, INPUT_LAYOUT, library_versions(LIBRARIES))
    # The report names the version it will get; register() allocates it, so render after.
    entry = registry.register(model, metadata, report=None,
                              extra_files={"confusion.png": png_bytes})
    if promote:
        try:
            registry.set_production(entry.version, reason, action="promote",
                                    expected_production=expected_production)
        except ProductionChanged as exc:
            promote, reason = False, f"not promoted: {exc} (during training)"
    if promote:  # the rescore/after-promotion deployment may be listening
        emit_model_promoted(str(Path(registry_dir).resolve()), entry.version,
                            registry.history()[-1].get("from"), "promote")
    summary["version"] = entry.version
    summary["promoted"] = promote
    summary["promotion_reason"] = reason
    (entry.path / "report.md").write_text(render_report(summary), encoding="utf-8")
    return {"version": entry.version, "path": str(entry.path), "promoted": promote,
            "reason": reason}


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
    check_retrain_options(promote, group_by, epochs, batch_size)
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
    ok, reason = gate_verdict(promote, margin, evaluation, champion, len(split.test))
    summary: RetrainSummary = {
        "created_at": datetime.now(UTC).isoformat(),
        "class_names": scan.class_names,
        "data": data_summary(labeled, scan, split),
        "split": {"group_by": group_by, "method": split.method, "note": split.note,
                  "groups": split.groups, "frames": frames},
        "training": training_summary(result, epochs, seed, batch_size, augment.as_dict(),
                                     tune_budget_seconds),
        "methods": _methods(evaluation, classical, champion),
        "calibration": evaluation["calibration"],
        "shift": shift_scores(evaluation, champion),
        "ood": evaluation["ood"],
        "monitor": evaluation["monitor"],
        "champion": champion_summary(champion),
        "promotion_policy": promote, "margin": margin,
        "promoted": ok, "promotion_reason": reason,
    }
    # The gate's verdict holds against the production it compared with (if-better only).
    expected = (champion["version"] if champion else None) if promote == "if-better" else ANY
    reg = register_task(registry, result.model, summary, ok, reason, expected)
    get_run_logger().info("registered %s (%s): %s", reg["version"], "promoted"
                          if reg["promoted"] else "not promoted", reg["reason"])
    _artifacts(summary, reg["version"])
    _monitor(settings, scan.class_names, evaluation, reg["version"], len(scan.files),
             time.monotonic() - t_start)
    return retrain_result(summary, reg, Registry(registry).production_version(), scan, split,
                          seconds=round(time.monotonic() - t_start, 1))


# -- the flow's steps -----------------------------------------------------------------------
def _methods(evaluation: dict[str, Any], classical: dict[str, Any],
             champion: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Every method's test metrics: the CNN, the classical ones, production re-evaluated."""
    methods = {"cnn": evaluation["metrics"], **classical}
    if champion and "metrics" in champion:
        methods["production"] = {**champion["metrics"], "label": champion["version"]}
    return methods


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


def _monitor(settings: Any, class_names: list[str], evaluation: dict[str, Any], version: str,
             files: int, seconds: float) -> None:
    """The run's row in the monitoring history (``kind = retrain``): the new model on its own
    test split, the baseline its later classify runs are read against."""
    from prefect.runtime import flow_run

    from tasks.monitor.history import record_run
    from tasks.monitor.predictions import PredictionStats

    stats = PredictionStats(class_names, settings.low_confidence).add_probabilities(
        evaluation["test_probabilities"])
    record_run(str(settings.output_dir), stats, None, evaluation.get("monitor"),
               {"flow_run_id": str(flow_run.get_id() or "local"), "kind": "retrain",
                "model_version": version, "files": files, "seconds": seconds})


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
