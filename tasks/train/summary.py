"""The retrain summary's parts, the model's registry metadata and the flow's return value.

Pure builders over plain values (no Prefect, no TensorFlow): the retrain flow calls them in
order, the report (``report.py``) renders the result, and the registry stores the metadata.
"""

from __future__ import annotations

from typing import Any

from tasks.train.dataset import Scan, Split, class_distribution, data_fingerprint
from tasks.train.report import RetrainSummary

SCORES = ("accuracy", "macro_f1", "ece")


def slim(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without bulky parts, for metadata tables."""
    return {k: v for k, v in metrics.items() if k not in ("per_class",)}


def shift_scores(evaluation: dict[str, Any], champion: dict[str, Any] | None
                 ) -> dict[str, dict[str, Any]]:
    """Scores on the shifted test split, for the report: the challenger on the whole split,
    and where production was re-evaluated, both on the files the gate compared."""
    out = {"cnn": slim(evaluation["shift_metrics"])}
    if champion and "shift_metrics" in champion:
        out["production"] = slim(champion["shift_metrics"])
        out["cnn (gate files)"] = slim(champion["challenger_shift_metrics"])
    return out


def data_summary(labeled: str, scan: Scan, split: Split) -> dict[str, Any]:
    """What was trained on: the folder, counts, rejections and the data fingerprint."""
    return {"labeled_dir": labeled, "files": len(scan.files), "frames": scan.n_frames,
            "rejected": scan.rejected, "ignored": scan.ignored,
            "fingerprint": data_fingerprint(scan),
            "class_distribution": class_distribution(scan, split.train)}


def training_summary(result: Any, epochs: int, seed: int, batch_size: int,
                     augment: dict[str, Any], tune_budget_seconds: float) -> dict[str, Any]:
    """How the CNN was trained: epochs asked and run, parameters, augmentation, tuning."""
    return {"epochs": epochs, "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch, "seed": seed, "batch_size": batch_size,
            "params": result.params, "seconds": result.seconds,
            "augment": augment, "trials": result.trials,
            "tune_budget_seconds": tune_budget_seconds}


def champion_summary(champion: dict[str, Any] | None) -> dict[str, Any] | None:
    """The production model's part in the summary: which version, and what it left out."""
    if not champion:
        return None
    return {"version": champion["version"], "error": champion.get("error"),
            "excluded_files": champion.get("excluded_files", 0),
            "note": champion.get("note", "")}


def model_metadata(summary: RetrainSummary, input_layout: str,
                   libraries: dict[str, str]) -> dict[str, Any]:
    """What the registered version carries: enough to use, explain and reproduce it."""
    training = summary["training"]
    return {
        "class_names": summary["class_names"],
        "input_layout": input_layout,
        "output": "logits",
        "temperature": summary["calibration"]["temperature"],
        "ood": summary["ood"],
        "monitor": summary.get("monitor"),  # the monitoring reference (tasks/monitor)
        "metrics": {"test": slim(summary["methods"]["cnn"]),
                    "shift": summary["shift"],
                    "methods": {k: slim(v) for k, v in summary["methods"].items()},
                    "calibration": summary["calibration"]},
        "params": {**training["params"], "epochs": training["epochs"],
                   "epochs_run": training["epochs_run"], "seed": training["seed"],
                   "batch_size": training["batch_size"], "tuned": bool(training.get("trials")),
                   "augment": training["augment"]},
        "split": {k: summary["split"][k] for k in ("group_by", "method", "note", "groups",
                                                   "frames")},
        "data_fingerprint": summary["data"]["fingerprint"],
        # training-split frames per class: the drift report's reference mix
        "class_distribution": summary["data"]["class_distribution"],
        "data": {k: summary["data"][k] for k in ("labeled_dir", "files", "frames")}
        | {"rejected": len(summary["data"]["rejected"])},
        "library_versions": libraries,
        "source": "retrain",
        # what it learned from beyond the folder, and its score on held-out feedback
        "training_sources": summary.get("sources"),
        "label_audit": summary.get("label_audit"),   # files doubted, and those left out
        "target_metrics": {k: slim(v) for k, v in (summary.get("target") or {}).items()
                           if isinstance(v, dict)} or None,
    }


def retrain_result(summary: RetrainSummary, reg: dict[str, Any], production: str | None,
                   scan: Scan, split: Split, seconds: float) -> dict[str, Any]:
    """The flow's return value (the CLI prints it): the version, the verdict, the scores."""
    return {
        "ok": True,
        "version": reg["version"],
        "path": reg["path"],
        "promoted": summary["promoted"],
        "reason": summary["promotion_reason"],
        "production": production,
        "class_names": scan.class_names,
        "files": len(scan.files),
        "frames": scan.n_frames,
        "rejected": len(scan.rejected),
        "split": {"method": split.method, "note": split.note,
                  "frames": summary["split"]["frames"]},
        "metrics": {name: {k: m.get(k) for k in SCORES}
                    for name, m in summary["methods"].items()},
        "shift_metrics": {name: {k: m.get(k) for k in SCORES}
                          for name, m in summary["shift"].items()},
        "temperature": summary["calibration"]["temperature"],
        "epochs_run": summary["training"]["epochs_run"],
        "data_fingerprint": summary["data"]["fingerprint"],
        "sources": {k: v for k, v in (summary.get("sources") or {}).items()
                    if k != "synthetic_settings"},
        "target_metrics": {k: {s: v.get(s) for s in SCORES}
                           for k, v in (summary.get("target") or {}).items()
                           if isinstance(v, dict) and "error" not in v},
        "seconds": seconds,
    }
