"""Robustness suite: every method, trained once, scored on data shifted away from the generator.

    .venv/bin/python bench/bench_robustness.py [--per-class 150] [--epochs 30] [--seed 11]
        [--eval-per-class 40] [--out bench/results] [--variant NAME=JSON ...] [--json]

Why: a model judged on its own generator's held-out people learns how the generator draws,
not the pose. Every nuisance factor of the generator (``tasks/synth/nuisance.py``) is moved away
from its default, one at a time at 1.5x, 2x and 3x, and all together at 1.5x and 2x; the
unshifted evaluation set (1x) is people nobody trained on.

What it does:

1. ``generate_dataset`` writes ``--per-class`` files a class (seed ``--seed``), as a user's
   ``posebatch generate`` would.
2. The retraining flow's own task bodies train the CNN with ``retrain``'s defaults (network,
   augmentation, epochs, calibration), and the keypoint baselines (logistic regression,
   gradient boosting) on the same split. ``--variant name='{"params": {...}, "augment":
   {...}}'`` trains more CNNs with overrides of the defaults, for experiments.
3. Every evaluation set is drawn from the generator with its own seeds (new people, the same
   people and takes at every shift, so only the nuisance differs).
4. Per set and method: macro-F1; for each CNN also ECE, the error rate among frames with a
   confidence of at least 0.9, and the share of frames flagged out of distribution.

Writes ``robustness.md`` (the tables) and ``robustness.png`` (macro-F1 against shift, a panel
per factor, a line per method) under ``--out``, and prints the tables and per-class F1 at 2x.
Targets (issue 10): >= 0.97 on fresh people, >= 0.93 with all factors at 1.5x, >= 0.85 at 2x,
no single factor at 2x below 0.85; ECE <= 0.05 and error <= 3 % at confidence >= 0.9 at 2x.
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
LEVELS = (1.5, 2.0, 3.0)
ALL_LEVELS = (1.5, 2.0)
EVAL_SEEDS = (1001, 1002, 1003, 1004)  # training seeds are small: these people are new
BASELINES = ("logreg", "hgb")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def eval_sets(per_class: int) -> dict[str, tuple[float, str, np.ndarray, np.ndarray]]:
    """``key -> (shift, factor, frames, labels)``: fresh people at 1x, each factor alone at
    ``LEVELS``, all factors at ``ALL_LEVELS``. ``per_class`` frames a class in all."""
    from models.spec import class_names
    from tasks.synth.generate import synth_dataset
    from tasks.synth.nuisance import FACTORS, shifted

    names = class_names()
    each = max(1, per_class // len(EVAL_SEEDS))
    plans = [("fresh", 1.0, "all")]
    plans += [(f"{f}@{k:g}", k, f) for f in FACTORS for k in LEVELS]
    plans += [(f"all@{k:g}", k, "all") for k in ALL_LEVELS]
    out = {}
    for key, k, factor in plans:
        nuisance = shifted(k, None if factor == "all" else [factor])
        parts = [synth_dataset(each, seed=s, nuisance=nuisance) for s in EVAL_SEEDS]
        frames = np.concatenate([p.frames for p in parts])
        labels = np.array([names.index(x) for p in parts for x in p.labels])
        out[key] = (k, factor, frames, labels)
    return out


def train_variants(train_root: Path, epochs: int, seed: int,
                   variants: dict[str, dict[str, Any]]) -> tuple[Any, Any, dict[str, Any]]:
    """Scan and split once; train a CNN per variant as ``retrain`` does. Returns the scan,
    the split and ``name -> {model, temperature, seconds, ood}``."""
    import flows.retrain as rt
    from tasks.train.augment import AugmentConfig

    def progress(ev: dict[str, Any]) -> None:
        if "epoch" in ev and ev["epoch"] % 5 == 0:
            logs = ev["logs"]
            _log(f"epoch {ev['epoch']}/{ev['epochs']} loss {logs.get('loss', 0):.3f} "
                 f"val_acc {logs.get('val_accuracy', 0):.3f}")

    from flows.runtime.progress import add_stage_listener

    remove = add_stage_listener(progress)
    trained: dict[str, Any] = {}
    try:
        for name, v in variants.items():
            _log(f"training {name}: {v or 'retrain defaults'}")
            config = AugmentConfig(**{**AugmentConfig().as_dict(), **v.get("augment", {})})
            scan, split, result = rt.train_labeled_only(
                str(train_root / "labeled"), v.get("epochs", epochs), seed, 64, config,
                v.get("params", {}))
            evaluation = rt.evaluate_task.fn(result.model, scan, split, 4096, config, seed)
            trained[name] = {"model": result.model, "seconds": round(result.seconds, 1),
                             "epochs_run": result.epochs_run,
                             "temperature": evaluation["calibration"]["temperature"],
                             "ood": evaluation.get("ood"),
                             "test_macro_f1": evaluation["metrics"]["macro_f1"]}
    finally:
        remove()
    return scan, split, trained


def score_all(scan: Any, split: Any, trained: dict[str, Any], sets: dict[str, Any],
              seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    """``method -> set key -> metrics`` for every CNN variant and the keypoint baselines."""
    from models.calibration import softmax
    from models.features import fit_predict
    from models.keypoints import keypoint_features
    from models.network import predict_logits
    from tasks.train.dataset import features_of
    from tasks.train.evaluate import classification_metrics

    names = scan.class_names
    x_tr, y_tr = features_of(scan, split.train)
    table: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in [*trained, *BASELINES]}
    feats = {key: keypoint_features(frames) for key, (_, _, frames, _) in sets.items()}
    stacked = np.concatenate(list(feats.values()))
    bounds = np.cumsum([0] + [len(f) for f in feats.values()])
    for method in BASELINES:
        probs, _ = fit_predict(method, x_tr, y_tr, stacked, len(names), seed)
        for i, (key, (_, _, _, y)) in enumerate(sets.items()):
            table[method][key] = classification_metrics(y, probs[bounds[i]:bounds[i + 1]],
                                                        names)
    for method, t in trained.items():
        for key, (_, _, frames, y) in sets.items():
            probs = softmax(predict_logits(t["model"], frames), t["temperature"])
            m = classification_metrics(y, probs, names)
            conf = probs.max(axis=1)
            sure = conf >= 0.9
            m["sure_share"] = float(sure.mean())
            m["sure_error"] = float((probs.argmax(1)[sure] != y[sure]).mean()) if sure.any() \
                else 0.0
            if t.get("ood") is not None:
                from models.ood import flag_frames

                flagged = flag_frames(frames, t["ood"])
                wrong = probs.argmax(1) != y
                m["ood_share"] = float(flagged.mean())
                m["ood_error"] = float(wrong[flagged].mean()) if flagged.any() else None
                m["other_error"] = float(wrong[~flagged].mean()) if (~flagged).any() else None
            table[method][key] = m
    return table


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(table: dict[str, Any], sets: dict[str, Any], trained: dict[str, Any]) -> str:
    """The factor x shift table of macro-F1 (one column per method), then the CNN's
    calibration figures on the combined shifts."""
    from tasks.synth.nuisance import FACTORS

    methods = list(table)
    lines = ["| set | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    keys = ["fresh", *[f"all@{k:g}" for k in ALL_LEVELS]]
    keys += [f"{f}@{k:g}" for f in FACTORS for k in LEVELS]
    for key in keys:
        label = "fresh people (1x)" if key == "fresh" else key.replace("@", " at ") + "x"
        lines.append(f"| {label} | " + " | ".join(_f(table[m][key]["macro_f1"])
                                                 for m in methods) + " |")
    lines += ["", "| CNN | set | ECE | error at confidence >= 0.9 (share of frames) | "
              "flagged out of distribution | error flagged / not flagged |",
              "|---|---|---:|---:|---:|---:|"]
    for m in trained:
        for key in ("fresh", *[f"all@{k:g}" for k in ALL_LEVELS]):
            r = table[m][key]
            lines.append(f"| {m} | {key} | {_f(r['ece'])} | {_f(r['sure_error'])} "
                         f"({_f(r['sure_share'])}) | {_f(r.get('ood_share'))} | "
                         f"{_f(r.get('ood_error'))} / {_f(r.get('other_error'))} |")
    return "\n".join(lines)


def targets(table: dict[str, Any], method: str) -> list[str]:
    """The issue's targets for one method, each with its measured value and verdict."""
    from tasks.synth.nuisance import FACTORS

    t = table[method]
    worst = min(FACTORS, key=lambda f: t[f"{f}@2"]["macro_f1"])
    rows = [("fresh people at 1x", t["fresh"]["macro_f1"], ">=", 0.97),
            ("all factors at 1.5x", t["all@1.5"]["macro_f1"], ">=", 0.93),
            ("all factors at 2x", t["all@2"]["macro_f1"], ">=", 0.85),
            (f"worst single factor at 2x ({worst})", t[f"{worst}@2"]["macro_f1"], ">=", 0.85),
            ("ECE, all factors at 2x", t["all@2"]["ece"], "<=", 0.05),
            ("error at confidence >= 0.9, all at 2x", t["all@2"]["sure_error"], "<=", 0.03)]
    return [f"- {name}: {v:.3f} (target {op} {goal}: "
            f"{'met' if (v >= goal if op == '>=' else v <= goal) else 'MISSED'})"
            for name, v, op, goal in rows]


def plot(table: dict[str, Any], path: Path) -> None:
    """Macro-F1 against shift: a panel per factor (and one for all together)."""
    from matplotlib.figure import Figure

    from tasks.synth.nuisance import FACTORS

    panels = ["all", *FACTORS]
    fig = Figure(figsize=(13, 9), dpi=100, layout="constrained")
    axes = fig.subplots(3, 5, sharex=True, sharey=True).ravel()
    for ax, factor in zip(axes, panels, strict=False):
        levels = (1.0, *(ALL_LEVELS if factor == "all" else LEVELS))
        for method, rows in table.items():
            ys = [rows["fresh" if k == 1.0 else f"{factor}@{k:g}"]["macro_f1"] for k in levels]
            ax.plot(levels, ys, marker="o", label=method)
        ax.set_title("all factors" if factor == "all" else factor, fontsize=10)
        ax.axhline(0.85, color="grey", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.axis("off")
    axes[0].legend(fontsize=8, loc="lower left")
    axes[0].set_ylim(0.0, 1.0)
    fig.supxlabel("shift (x the generator's default)")
    fig.supylabel("macro-F1")
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--eval-per-class", type=int, default=40)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--variant", action="append", default=[],
                    help='NAME=JSON: also train a CNN with {"params": {...}, "augment": {...}, '
                         '"epochs": N} overriding the defaults')
    ap.add_argument("--train-shift", type=float, default=1.0,
                    help="train on data shifted this far (all factors): a ceiling reference, "
                         "what a model trained on the shifted renderer itself scores")
    ap.add_argument("--save-models", type=Path, default=None,
                    help="also save each trained CNN there (NAME.keras, NAME.json: temperature "
                         "and out-of-distribution reference), for further analysis")
    ap.add_argument("--only-variants", action="store_true",
                    help="train only the --variant models, not the defaults")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tasks.synth.generate import generate_dataset

    variants: dict[str, dict[str, Any]] = {} if args.only_variants else {"cnn": {}}
    for v in args.variant:
        name, _, spec = v.partition("=")
        variants[name] = json.loads(spec)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="posebatch-robust-") as tmp:
        from tasks.synth.nuisance import shifted

        generate_dataset(Path(tmp), per_class=args.per_class, seed=args.seed,
                         nuisance=shifted(args.train_shift))
        scan, split, trained = train_variants(Path(tmp), args.epochs, args.seed, variants)
    if args.save_models:
        args.save_models.mkdir(parents=True, exist_ok=True)
        for name, t in trained.items():
            t["model"].save(args.save_models / f"{name}.keras")
            (args.save_models / f"{name}.json").write_text(json.dumps(
                {"temperature": t["temperature"], "ood": t["ood"]}), encoding="utf-8")
    _log("drawing the evaluation sets")
    sets = eval_sets(args.eval_per_class)
    _log(f"{len(sets)} sets of {len(next(iter(sets.values()))[3])} frames; scoring")
    table = score_all(scan, split, trained, sets, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(table, sets, trained)
    head = (f"Trained on {args.per_class} frames a class (seed {args.seed}, up to {args.epochs} "
            f"epochs); every set {args.eval_per_class} frames a class of "
            f"{3 * len(EVAL_SEEDS)} new people. Macro-F1:\n\n")
    per_class = {m: {c: round(v["f1"], 3) for c, v in table[m]["all@2"]["per_class"].items()}
                 for m in table}
    pc = ["", "Per-class F1, all factors at 2x:", "", "| class | " + " | ".join(table) + " |",
          "|---|" + "---:|" * len(table)]
    pc += [f"| {c} | " + " | ".join(f"{per_class[m][c]:.3f}" for m in table) + " |"
           for c in scan.class_names]
    verdicts = ["", f"Targets ({next(iter(trained))}):", *targets(table, next(iter(trained)))]
    text = head + md + "\n" + "\n".join(pc + verdicts) + "\n"
    (args.out / "robustness.md").write_text(text, encoding="utf-8")
    plot(table, args.out / "robustness.png")
    print(text)
    print(f"(wrote {args.out / 'robustness.md'} and robustness.png; "
          f"{time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})")
    if args.json:
        slim = {m: {k: {f: r.get(f) for f in ("macro_f1", "ece", "sure_error", "ood_share")}
                    for k, r in rows.items()} for m, rows in table.items()}
        print(json.dumps({"scores": slim, "per_class_2x": per_class,
                          "training": {n: {k: v for k, v in t.items() if k not in
                                           ("model", "ood")} for n, t in trained.items()}},
                         sort_keys=True, default=str))


if __name__ == "__main__":
    main()
