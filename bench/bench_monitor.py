"""Proof of the monitoring core: does the label-free estimate track the real accuracy, and
do the drift scores and default alert thresholds react to shifted data?

    .venv/bin/python bench/bench_monitor.py [--per-class 100] [--epochs 20] [--seed 11]
        [--eval-per-class 40] [--levels 1,1.5,2] [--out docs/monitoring_bench.md] [--json]

What it does:

1. ``generate_dataset`` writes ``--per-class`` labeled files a class (seed ``--seed``).
2. The retraining flow's own task bodies (``scan-labeled``, ``train-cnn``, ``evaluate-cnn``)
   train and calibrate the CNN; ``evaluate-cnn`` also builds the monitoring reference that
   ``retrain`` saves in the model's metadata (``monitor``).
3. For each level of ``--levels``, an evaluation set of ``--eval-per-class`` frames a class
   from people nobody trained on, every nuisance factor shifted that far
   (``tasks.synth.nuisance.shifted``; the same people and takes at every level), is
   classified, turned into a predictions table and a monitoring row (``monitor_row``, the
   call the flow will make), and judged against the labels.

Prints one table: true accuracy and macro-F1, the estimates and their gaps (target
|accuracy gap| <= 0.05), the drift scores (should rise with the shift) and whether the
default thresholds of ``flows/settings.py`` alert (should at 2x, not at 1x). ``retrain``'s
defaults are 150 frames a class and 30 epochs (``--per-class 150 --epochs 30``, slower).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EVAL_SEEDS = (1001, 1002, 1003, 1004)  # training seeds are small: these people are new


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train(root: Path, per_class: int, epochs: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """Train as ``retrain`` does; returns the model and the ``evaluate-cnn`` result."""
    import flows.retrain as rt
    from tasks.synth.generate import generate_dataset
    from tasks.train.augment import AugmentConfig

    generate_dataset(root, per_class=per_class, seed=seed)

    def progress(ev: dict[str, Any]) -> None:
        if "epoch" in ev and ev["epoch"] % 5 == 0:
            _log(f"epoch {ev['epoch']}/{ev['epochs']} "
                 f"val_acc {ev['logs'].get('val_accuracy', 0):.3f}")

    from flows.runtime.progress import add_stage_listener

    remove = add_stage_listener(progress)
    try:
        augment = AugmentConfig()
        scan, split, result = rt.train_labeled_only(str(root / "labeled"), epochs, seed, 64,
                                                    augment)
        evaluation = rt.evaluate_task.fn(result.model, scan, split, 4096, augment, seed)
    finally:
        remove()
    return result.model, evaluation


def eval_set(level: float, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames and label indices: new people, every factor shifted to ``level``."""
    from models.spec import class_names
    from tasks.synth.generate import synth_dataset
    from tasks.synth.nuisance import shifted

    names = class_names()
    each = max(1, per_class // len(EVAL_SEEDS))
    parts = [synth_dataset(each, seed=s, nuisance=shifted(level)) for s in EVAL_SEEDS]
    frames = np.concatenate([p.frames for p in parts])
    return frames, np.array([names.index(x) for p in parts for x in p.labels])


def predictions(probs: np.ndarray, frames: np.ndarray, names: list[str],
                ood: dict[str, Any] | None) -> Any:
    """The columns of a predictions table the monitoring row reads."""
    import pyarrow as pa

    from models.ood import ood_codes

    top = probs.argmax(axis=1)
    return pa.table({
        "label": pa.array([names[i] for i in top], pa.string()),
        "confidence": pa.array(probs.max(axis=1), pa.float32()),
        "probabilities": pa.array(probs.astype(np.float32).tolist(), pa.list_(pa.float32())),
        "warnings": pa.array(ood_codes(frames, ood), pa.list_(pa.string())),
    })


def score_level(model: Any, evaluation: dict[str, Any], level: float,
                per_class: int) -> dict[str, Any]:
    """One level's monitoring row, beside the accuracy the labels give."""
    from flows.settings import get_settings
    from models.calibration import softmax
    from models.network import predict_logits
    from models.spec import class_names
    from tasks.monitor.drift import alert_reasons
    from tasks.monitor.history import monitor_row
    from tasks.monitor.inputs import InputStats
    from tasks.train.evaluate import classification_metrics

    names = class_names()
    frames, labels = eval_set(level, per_class)
    t0 = time.perf_counter()
    probs = softmax(predict_logits(model, frames), evaluation["calibration"]["temperature"])
    table = predictions(probs, frames, names, evaluation["ood"])
    row = monitor_row(table, InputStats().add(frames), evaluation["monitor"],
                      {"flow_run_id": f"bench-{level:g}", "class_names": names,
                       "seconds": time.perf_counter() - t0, "model_version": "bench"})
    truth = classification_metrics(labels, probs, names)
    settings = get_settings()
    reasons = alert_reasons(row, settings.monitor_psi_threshold,
                            settings.monitor_min_est_accuracy)
    return {"level": level, "frames": len(labels), "accuracy": truth["accuracy"],
            "macro_f1": truth["macro_f1"], "row": row, "alerts": reasons,
            "acc_gap": abs(row["est_accuracy"] - truth["accuracy"]),
            "f1_gap": abs(row["est_macro_f1"] - truth["macro_f1"])}


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table: one row per level."""
    head = ["shift", "true acc", "est acc", "|gap|", "true macro-F1", "est macro-F1", "|gap|",
            "class-mix PSI", "input PSI (mean / max joint)", "confidence PSI",
            "missing joints", "implausible", "OOD share", "low-conf share", "alert"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in results:
        w = r["row"]
        lines.append("| " + " | ".join([
            f"{r['level']:g}x", _f(r["accuracy"]), _f(w["est_accuracy"]), _f(r["acc_gap"]),
            _f(r["macro_f1"]), _f(w["est_macro_f1"]), _f(r["f1_gap"]),
            _f(w["class_mix_psi"]), f"{_f(w['input_psi'])} / {_f(w['input_psi_max'])}",
            _f(w["confidence_psi"]), _f(w["missing_rate"]), _f(w["implausible_share"]),
            _f(w["ood_share"]), _f(w["low_confidence_share"]),
            "; ".join(r["alerts"]) or "no"]) + " |")
    return "\n".join(lines)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each with its measured value."""
    worst = max(r["acc_gap"] for r in results)
    out = [f"- largest |estimated - true accuracy|: {worst:.3f} (target <= 0.05: "
           f"{'met' if worst <= 0.05 else 'MISSED by %.3f' % (worst - 0.05)})"]
    for key in ("class_mix_psi", "input_psi", "confidence_psi"):
        vals = [r["row"][key] for r in results]
        rising = all(b > a for a, b in zip(vals, vals[1:], strict=False))
        out.append(f"- {key} rises with the shift: {'yes' if rising else 'NO'} "
                   f"({' < '.join(_f(v) for v in vals)})")
    first, last = results[0], results[-1]
    out.append(f"- alert at {first['level']:g}x: {'yes' if first['alerts'] else 'no'} "
               f"(want no); at {last['level']:g}x: {'yes' if last['alerts'] else 'no'} "
               "(want yes)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--eval-per-class", type=int, default=40)
    ap.add_argument("--levels", default="1,1.5,2")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="posebatch-monitor-") as tmp:
        _log(f"training on {args.per_class} frames a class, up to {args.epochs} epochs")
        model, evaluation = train(Path(tmp), args.per_class, args.epochs, args.seed)
    ref = evaluation["monitor"]
    _log(f"reference: {ref['frames']} test frames, est accuracy {_f(ref['est_accuracy'])}, "
         f"measured {_f(ref['accuracy'])}")
    results = [score_level(model, evaluation, float(k), args.eval_per_class)
               for k in args.levels.split(",")]
    print(f"Trained on {args.per_class} frames a class (seed {args.seed}, up to {args.epochs} "
          f"epochs, temperature {evaluation['calibration']['temperature']:.3f}); every set "
          f"{args.eval_per_class} frames a class of new people, all factors shifted.\n")
    print(table(results) + "\n\n" + "\n".join(verdicts(results)))
    print(f"\n({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})")
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "row"} | {
            "row": {k: v for k, v in r["row"].items() if not isinstance(v, list)}}
            for r in results], default=str, sort_keys=True))


if __name__ == "__main__":
    main()
