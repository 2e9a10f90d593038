"""The retraining flow: labeled folders in, a registered (and maybe promoted) model out.

Orchestration only; the work lives in ``tasks/`` and ``models/``. One run:

1. ``scan-labeled``: list ``<class>/**/*.npy``, validate every file with the shared validator
   (rejections reported, not fatal), hash contents (data fingerprint), decode keypoint
   features (``tasks/train/dataset.py``);
2. ``audit-labels``: labels worth doubting, out of sample (``tasks/label/audit.py``);
   ``--exclude-suspect`` trains without them;
3. ``gather-sources``: the labels fed back (a training share, and a held-out share that is
   the gate's target-domain test set), our synthetic frames when the folder is small, all
   merged and split by group (``tasks/adapt/gather.py``, ``sources.py``);
4. ``train-cnn``: fit the CNN with augmentation, early stopping and a floor on optimizer
   steps; with a synthetic source, mixed or pretrain + fine-tune (``tasks/adapt/transfer.py``);
   or ``--tune`` a bounded KerasTuner search first (``tasks/train/fit.py``);
5. ``adapt-to-stream``: AdaBN and self-training on recently classified frames, kept only if
   better on the labeled target validation frames (``tasks/adapt/domain.py``);
6. ``fit-classical``: logistic regression, gradient boosting and the majority baseline on
   the same training files (``models/features.py``);
7. ``evaluate-cnn``: temperature on the validation split, test metrics, ECE before/after;
8. ``challenge-production``: the current production model re-evaluated on the NEW test split
   (and both on the held-out feedback frames);
9. ``export-onnx``: ``model.onnx`` beside the Keras model, checked against it on the test
   split, or the reason it is left out (``tasks/train/inference_artifact.py``);
10. ``register-model``: save model + metadata + report + confusion PNG, then promote if the
    gate says so (``tasks/train/gate.py``); artifacts for the UI.

Tasks are coarse (one per stage) and take ``cache_policy=NO_CACHE``: their inputs are models
and arrays, which Prefect should neither hash nor persist.
"""

from __future__ import annotations

import dataclasses
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
from models.network import DEFAULT_PARAMS, INPUT_LAYOUT
from models.registry import ANY, ProductionChanged, Registry, library_versions
from tasks.adapt.gather import (
    Feedback,
    check_unlabeled,
    gather_feedback,
    gather_training_set,
    unlabeled_frames,
)
from tasks.adapt.sources import TrainingSet, source_summary
from tasks.train.augment import AugmentConfig
from tasks.train.challenge import challenge_production, evaluate_challenger, target_scores
from tasks.train.choices import check_retrain_options
from tasks.train.dataset import Scan, Split, features_of, scan_labeled
from tasks.train.evaluate import classification_metrics, confusion_png, confusion_table
from tasks.train.gate import gate_verdict
from tasks.train.inference_artifact import artifact_for, split_check_frames
from tasks.train.report import RetrainSummary, render_report
from tasks.train.summary import (
    champion_summary,
    data_summary,
    model_metadata,
    retrain_result,
    shift_scores,
    training_summary,
)


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
def scan_task(labeled_dir: str, group_by: str, max_frames: int, source: str = "none") -> Scan:
    """Validate and featurise the labeled files. An empty folder (or, with ``--source
    synthetic``, a missing one) is allowed when our generator may be the source: its frames
    are then all there is. A missing folder is otherwise an error (a typo must not train)."""
    _emit({"stage": "scan", "message": f"scanning {labeled_dir}"})
    folder = Path(labeled_dir)
    if (source == "synthetic" or (source == "auto" and folder.is_dir())) \
            and not any(folder.glob("*/**/*.npy")):
        return Scan([], [])
    scan = scan_labeled(labeled_dir, group_by, max_frames,
                        progress=lambda i, n: _emit({"stage": "scan", "done": i, "total": n}))
    if len(scan.class_names) < 2:
        raise ValueError(f"{labeled_dir}: need at least 2 class folders with valid .npy files, "
                         f"found {len(scan.class_names)} (rejected files: {len(scan.rejected)})")
    return scan


@task(name="audit-labels", cache_policy=NO_CACHE)
def audit_task(scan: Scan, exclude: bool, seed: int, registry_dir: str
               ) -> tuple[Scan, dict[str, Any]]:
    """Flag labels that out-of-sample models (keypoints; production's embedding when there
    is one) contradict; leave them out when ``exclude`` (``tasks/label/audit.py``)."""
    from tasks.label.audit import production_model, retrain_audit

    _emit({"stage": "scan", "message": f"auditing the labels of {len(scan.files)} files"})
    scan, summary = retrain_audit(scan, exclude, seed=seed,
                                  model=production_model(registry_dir))
    _emit({"stage": "scan", "message": f"{summary['flagged']} files look mislabeled"
           + (", left out" if exclude else "")})
    return scan, summary


@task(name="gather-sources", cache_policy=NO_CACHE)
def sources_task(scan: Scan, labeled_dir: str, source: str, use_feedback: bool,
                 settings: Any, seed: int, max_frames: int, registry_dir: str
                 ) -> tuple[TrainingSet, Feedback, dict[str, Any]]:
    """The feedback labels (training share and held-out target test set) and, for a small
    folder, our synthetic frames: merged and split (``tasks/adapt/gather.py``)."""
    from models.spec import class_names as spec_names

    names = scan.class_names or spec_names()
    feedback = Feedback(summary={"used": False, "why": "--no-feedback"})
    if use_feedback:
        from tasks.label.intake import without_mirror

        _emit({"stage": "scan", "message": "looking for labels fed back"})
        feedback = gather_feedback(str(settings.output_dir), str(settings.incoming_dir), names,
                                   settings.cache_dir, max_frames, _heldout_before(registry_dir))
        scan, feedback.summary["mirror_files_skipped"] = without_mirror(scan)
    ts, decision = gather_training_set(
        scan, labeled_dir, feedback, source=source, cache_root=settings.cache_dir, seed=seed,
        max_frames=max_frames, transfer_below=settings.transfer_below,
        synthetic_per_class=settings.synthetic_per_class,
        say=lambda m: _emit({"stage": "scan", "message": m}))
    if (not ts.split.train and decision["source"] != "synthetic") or not ts.split.val:
        raise ValueError(f"{labeled_dir}: too few labeled files to split into train and "
                         "validation sides (need at least 3 files per class)")
    return ts, feedback, decision


@task(name="train-cnn", cache_policy=NO_CACHE)
def train_task(ts: TrainingSet, decision: dict[str, Any], strategy: str, epochs: int,
               seed: int, batch_size: int, tune: bool, tune_budget: float, tune_trials: int,
               max_frames: int, augment: AugmentConfig, params: dict[str, Any],
               min_steps: int, cache_root: Path) -> tuple[Any, dict[str, Any]]:
    """Fit the CNN: on the labeled files alone (optionally after a bounded search), or with
    our synthetic frames as a source domain (``tasks/adapt/transfer.py``)."""
    from tasks.adapt.transfer import pretrain_key, train_with_synthetic
    from tasks.train.fit import fit_files, training_datasets, tune_cnn

    def on_epoch(e: int, n: int, logs: dict[str, float]) -> None:
        _emit({"stage": "train", "epoch": e, "epochs": n, "logs": logs})

    def fit(train: list[int], val: list[int], init_model: Any = None,
            learning_rate: float | None = None) -> Any:
        return fit_files(ts.scan, train, val, epochs=epochs, seed=seed, batch_size=batch_size,
                         augment=augment, max_frames=max_frames, min_steps=min_steps,
                         params=params, init_model=init_model, learning_rate=learning_rate,
                         on_epoch=on_epoch)

    if decision["source"] == "synthetic":
        recipe = {"params": params, "augment": augment.as_dict(), "epochs": epochs,
                  "seed": seed, "batch_size": batch_size, "min_steps": min_steps}
        key = pretrain_key(decision["synthetic_settings"], ts.scan.class_names, recipe)
        result, info = train_with_synthetic(strategy, ts, cache_root, key, fit,
                                            say=lambda m: _emit({"stage": "train",
                                                                 "message": m}),
                                            max_frames=max_frames)
        result.params = {**DEFAULT_PARAMS, **params}
        return result, info
    if tune:
        _emit({"stage": "tune", "message": f"hyperparameter search, budget {tune_budget:.0f} s"})

        def on_trial(i: int, hp: dict[str, Any], score: float | None) -> None:
            _emit({"stage": "tune", "trial": i, "hyperparameters": hp, "val_loss": score})

        train_ds, val_ds = training_datasets(ts.scan, ts.split.train, ts.split.val,
                                             batch_size=batch_size, seed=seed,
                                             augment=augment, max_frames=max_frames)
        return tune_cnn(train_ds, val_ds, len(ts.scan.class_names), epochs=epochs, seed=seed,
                        budget_seconds=tune_budget, max_trials=tune_trials,
                        on_epoch=on_epoch, on_trial=on_trial), {"strategy": "tuned"}
    _emit({"stage": "train", "message": f"training the CNN for up to {epochs} epochs "
           f"(at least {min_steps} optimizer steps)"})
    return fit(ts.split.train, ts.split.val), {"strategy": "labeled only"}


@task(name="adapt-to-stream", cache_policy=NO_CACHE)
def adapt_task(model: Any, frames: Any, ts: TrainingSet, seed: int, max_frames: int,
               augment: AugmentConfig, round_steps: int = 300, rounds: int = 2
               ) -> tuple[Any, dict[str, Any]]:
    """AdaBN and self-training on the unlabeled stream; keep what measures better on the
    labeled target validation frames (``tasks/adapt/domain.py``)."""
    import numpy as np

    from tasks.adapt.domain import candidates, choose
    from tasks.train.dataset import load_frames

    say = lambda m: _emit({"stage": "adapt", "message": m})  # noqa: E731
    labeled = load_frames(ts.scan, _sample(ts.split.train + ts.synthetic["train"], 2048, seed),
                          max_frames)
    target = load_frames(ts.scan, ts.target_val, max_frames)
    rest = load_frames(ts.scan, sorted(set(ts.split.val) - set(ts.target_val)), max_frames)
    val = (np.concatenate([target[0], rest[0]]), np.concatenate([target[1], rest[1]]))
    target = target if len(target[1]) else None
    cands = candidates(model, frames, labeled, val, ts.scan.class_names, seed=seed,
                       augment=augment, steps=round_steps, rounds=rounds, progress=say)
    kept, info = choose(cands, frames, target, ts.scan.class_names)
    say(f"adaptation kept: {info['kept']} ({info['judged_on']})")
    return kept, info


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


@task(name="export-onnx", cache_policy=NO_CACHE)
def onnx_task(model: Any, scan: Scan, split: Split, max_frames: int
              ) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The ONNX inference artifact, checked against the model on its test split; a model
    that does not convert or does not match is registered without it, the reason recorded
    (``tasks/train/inference_artifact.py``)."""
    _emit({"stage": "export", "message": "exporting and checking model.onnx"})
    frames = split_check_frames(scan, split.test, max_frames)
    files, fields = artifact_for(model, frames, f"test split: {len(frames)} frames")
    info = fields["onnx"]
    get_run_logger().info("model.onnx: %s%s", info["status"],
                          f" ({info['reason']})" if info.get("reason") else "")
    return files, fields


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(registry_dir: str, model: Any, summary: RetrainSummary, promote: bool,
                  reason: str, expected_production: Any = ANY,
                  artifact: tuple[dict[str, bytes], dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """Save the version (model, metadata, report, confusion PNG); promote if decided, and
    only if production is still ``expected_production``, the version the gate compared
    against: a rollback or another promotion made during training is never overwritten."""
    registry = Registry(registry_dir)
    with tempfile.TemporaryDirectory(prefix="posebatch-confusion-") as tmp:
        png = confusion_png(summary["methods"]["cnn"]["confusion"], summary["class_names"],
                            Path(tmp) / "confusion.png",
                            title="CNN confusion matrix (held-out test groups)")
        png_bytes = png.read_bytes()
    files, fields = artifact or ({}, {})
    metadata = {**model_metadata(summary, INPUT_LAYOUT, library_versions(LIBRARIES)), **fields}
    # The report names the version it will get; register() allocates it, so render after.
    entry = registry.register(model, metadata, report=None,
                              extra_files={"confusion.png": png_bytes, **files})
    if promote:
        try:
            registry.set_production(entry.version, reason, action="promote",
                                    expected_production=expected_production)
        except ProductionChanged as exc:
            promote, reason = False, f"not promoted: {exc} (during training)"
    if promote:  # the rescore/after-promotion deployment may be listening
        emit_model_promoted(registry.uri, entry.version,
                            registry.history()[-1].get("from"), "promote")
    summary["version"] = entry.version
    summary["promoted"] = promote
    summary["promotion_reason"] = reason
    registry.attach(entry.version, "report.md", render_report(summary).encode("utf-8"))
    return {"version": entry.version, "path": entry.uri, "promoted": promote,
            "reason": reason}


# -- the flow -------------------------------------------------------------------------------
@flow(name="retrain", log_prints=False)
def retrain_flow(labeled_dir: str | None = None, registry_dir: str | None = None,
                 epochs: int = 30, seed: int = 0, tune: bool = False,
                 tune_budget_seconds: float = 600.0, tune_max_trials: int = 8,
                 promote: str = "if-better", margin: float | None = None,
                 group_by: str = "subject", batch_size: int = 64,
                 max_frames_per_file: int | None = None,
                 data_root: str | None = None, source: str = "auto",
                 strategy: str | None = None, unlabeled: str = "auto",
                 feedback: bool = True, input_mode: str | None = None,
                 exclude_suspect: bool = False) -> dict[str, Any]:
    """Train, compare, calibrate and evaluate a model on labeled folders; register it and
    promote it per ``promote`` (``if-better``: only if its test macro-F1 is at least the
    production model's on the same split plus ``margin``). ``source``: our generator as a
    source domain (``auto``: below ``transfer_below`` frames a class); ``unlabeled``: adapt
    to the production stream (``auto``: what was classified in the last ``adapt_days``);
    ``feedback``: learn from the labels fed back; ``exclude_suspect``: leave out the files
    the label audit flags (the audit runs when ``settings.label_audit`` or this is on).
    Returns the run summary."""
    t_start = time.monotonic()
    settings = get_settings(data_root)
    labeled = str(labeled_dir or settings.labeled_dir)
    registry = str(registry_dir or settings.registry_dir)
    margin = settings.promotion_margin if margin is None else float(margin)
    max_frames = max_frames_per_file or settings.max_frames_per_file
    strategy = strategy or settings.transfer_strategy
    params = {"input_mode": input_mode or settings.input_mode}
    check_retrain_options(promote, group_by, epochs, batch_size, source, strategy,
                          params["input_mode"])
    check_unlabeled(unlabeled)
    augment = AugmentConfig()

    scan = scan_task(labeled, group_by, max_frames, source)
    audit = {"ran": False}
    if scan.files and (settings.label_audit or exclude_suspect):
        scan, audit = audit_task(scan, exclude_suspect, seed, registry)
    ts, fb, decision = sources_task(scan, labeled, source, feedback, settings, seed, max_frames,
                                    registry)
    # every file trained on (synthetic ones too): the baselines' training set, and the
    # reference the out-of-distribution check and the drift report compare against
    trained = dataclasses.replace(ts.split, train=ts.split.train + ts.synthetic.get("train", []))
    frames = _log_split(ts.scan, trained)
    result, transfer = train_task(ts, decision, strategy, epochs, seed, batch_size, tune,
                                  tune_budget_seconds, tune_max_trials, max_frames, augment,
                                  params, settings.min_train_steps, settings.cache_dir)
    stream, stream_info = unlabeled_frames(unlabeled, str(settings.output_dir),
                                           str(settings.incoming_dir), settings.adapt_days,
                                           settings.adapt_max_frames, seed, fb.heldout_paths,
                                           max_frames)
    model, adaptation = result.model, {**stream_info, "kept": "none"}
    if stream is not None:
        model, chosen = adapt_task(result.model, stream, ts, seed, max_frames, augment,
                                   settings.adapt_round_steps)
        adaptation.update(chosen)
    classical = classical_task(ts.scan, trained, seed)
    evaluation = evaluate_task(model, ts.scan, trained, max_frames, augment, seed)
    evaluation["metrics"]["seconds"] = result.seconds
    champion = champion_task(registry, ts.scan, ts.split, max_frames, model,
                             evaluation["calibration"]["temperature"], augment, seed)
    target = target_scores(model, evaluation["calibration"]["temperature"], registry,
                           fb.test_frames, fb.test_labels, ts.scan.class_names)
    unjudged = adaptation["kept"] != "none" and not adaptation.get("target_labels") \
        and target is None
    ok, reason = gate_verdict(promote, margin, evaluation, champion, len(ts.split.test),
                              target=target, adapted_unjudged=unjudged)
    summary: RetrainSummary = {
        "created_at": datetime.now(UTC).isoformat(),
        "class_names": ts.scan.class_names,
        "data": data_summary(labeled, ts.scan, trained),
        "split": {"group_by": group_by, "method": ts.split.method, "note": ts.split.note,
                  "groups": ts.split.groups, "frames": frames},
        "training": training_summary(result, epochs, seed, batch_size, augment.as_dict(),
                                     tune_budget_seconds),
        "sources": {**source_summary(ts, decision, transfer, labeled),
                    "feedback": fb.summary, "adaptation": adaptation},
        "label_audit": audit,
        "target": target,
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
    artifact = onnx_task(model, ts.scan, ts.split, max_frames)
    reg = register_task(registry, model, summary, ok, reason, expected, artifact)
    get_run_logger().info("registered %s (%s): %s", reg["version"], "promoted"
                          if reg["promoted"] else "not promoted", reg["reason"])
    _artifacts(summary, reg["version"])
    _monitor(settings, ts.scan.class_names, evaluation, reg["version"], len(ts.scan.files),
             time.monotonic() - t_start)
    return retrain_result(summary, reg, Registry(registry).production_version(), ts.scan,
                          ts.split, seconds=round(time.monotonic() - t_start, 1))


def train_labeled_only(labeled_dir: str, epochs: int, seed: int, batch_size: int = 64,
                       augment: AugmentConfig | None = None, params: dict[str, Any] | None = None,
                       max_frames: int = 4096) -> tuple[Scan, Any, Any]:
    """``retrain``'s recipe on a labeled folder alone, no transfer, feedback or adaptation,
    outside a flow run: (scan, split, TrainResult). The benchmarks' one way to train."""
    settings = get_settings()
    scan = scan_task.fn(labeled_dir, "subject", max_frames)
    ts, decision = gather_training_set(scan, labeled_dir, Feedback(), source="none",
                                       cache_root=settings.cache_dir, seed=seed,
                                       max_frames=max_frames, transfer_below=0)
    result, _ = train_task.fn(ts, decision, settings.transfer_strategy, epochs, seed,
                              batch_size, False, 0.0, 0, max_frames, augment or AugmentConfig(),
                              {"input_mode": settings.input_mode, **(params or {})},
                              settings.min_train_steps, settings.cache_dir)
    return ts.scan, ts.split, result


def _heldout_before(registry_dir: str) -> list[str]:
    """The feedback keys production's training held out: held out again, so a frame the
    gate once tested on never becomes training data later."""
    version = Registry(registry_dir).production_version()
    if version is None:
        return []
    meta = Registry(registry_dir).get(version).metadata
    return list(((meta.get("training_sources") or {}).get("feedback") or {})
                .get("holdout_keys") or [])


def _sample(idx: list[int], n: int, seed: int) -> list[int]:
    """At most ``n`` of ``idx``, the same for a seed."""
    import numpy as np

    if len(idx) <= n:
        return list(idx)
    return sorted(np.random.default_rng(seed).choice(idx, n, replace=False).tolist())


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
