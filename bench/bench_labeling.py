"""The labeling loop, measured: does `label suggest` save labels, and does the audit find
planted mistakes?

    .venv/bin/python bench/bench_labeling.py [--seeds 3] [--max-per-class 40] [--step 5]
        [--pool-per-class 150] [--finetune-steps 200] [--skip-selection] [--skip-audit]
        [--out DIR] [--json]

Selection (on ``bench/standin.py``'s severe renderer, never the generator's defaults): a
pool of unlabeled frames from 16 people, a test set of 12 other people. Start from the
model trained on our synthetic frames (``retrain``'s synthetic source, cached). Each round
picks 85 frames (five a class on average) with the product's own function
(``tasks.label.suggest.choose``: ``auto``, or ``random`` for comparison), reveals their
labels, and fine-tunes the synthetic model on every frame labeled so far with ``retrain``'s
recipe (``tasks.train.fit.fit_files``: augmentation, ``--finetune-steps`` optimizer steps
at the fine-tuning learning rate); the next round's probabilities come from that model.
Macro-F1 on the test people after each round, per seed.

Targets: ``auto`` reaches random's macro-F1 at 40 labels a class with <= 20 a class, and is
>= 5 points above random at 5 and 10 a class.

Audit: a labeled folder of the stand-in (40 a class, 7 people) and one of our generator
(40 a class), 5 % of the files relabeled at random and, separately, 5 % relabeled to each
class's most confused class (the keypoint model's out-of-sample confusion on the clean
folder). ``label audit``'s function flags files; precision and recall against the planted
flips (targets >= 0.5 and >= 0.8). Then ``retrain``'s labeled-only recipe trains the CNN
on the stand-in folder clean, flipped, and flipped without the flagged files
(``--exclude-suspect``): the share of the flips' macro-F1 cost recovered (target >= 0.5).

Round trip: a Label Studio export of a labeling folder imports to the same labels as its
CSV.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
ROUND = 85


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def macro_f1(model: Any, x: np.ndarray, y: np.ndarray, names: list[str]) -> float:
    from bench_adapt import macro_f1 as f1

    return f1(model, x, y, names)


def synthetic_model(cache: Path, args: argparse.Namespace) -> Any:
    """The model ``retrain`` trains on our synthetic frames alone (pretrained, cached)."""
    from bench_adapt import train_config

    args.input_mode, args.rounds = "raw", -1
    out, _ = train_config("finetune", None, None, 0, cache, args)
    return out["model"]


def finetune(base: Any, x: np.ndarray, y: np.ndarray, people: np.ndarray, names: list[str],
             work: Path, steps: int, seed: int) -> Any:
    """``retrain``'s recipe, fine-tuning ``base`` on the labeled frames (all of them)."""
    import shutil

    from standin import write_labeled

    from tasks.adapt.transfer import FINETUNE_LR
    from tasks.train.augment import AugmentConfig
    from tasks.train.dataset import scan_labeled
    from tasks.train.fit import fit_files

    shutil.rmtree(work, ignore_errors=True)
    write_labeled(work, x, y, people, names)
    scan = all_classes(scan_labeled(work, "subject"), names)
    idx = list(range(len(scan.files)))
    return fit_files(scan, idx, idx, epochs=4, seed=seed, batch_size=32,
                     augment=AugmentConfig(), min_steps=steps, init_model=base,
                     learning_rate=FINETUNE_LR).model


def all_classes(scan: Any, names: list[str]) -> Any:
    """The scan with every class of ``names`` (a round may have no frame of some class:
    the fine-tuned model keeps all of the synthetic model's outputs)."""
    import dataclasses

    from tasks.train.dataset import LabeledFile, Scan

    files = [dataclasses.replace(f, file=LabeledFile(
        f.file.path, f.file.rel, names.index(scan.class_names[f.file.label]), f.file.group))
        for f in scan.files]
    return Scan(list(names), files, scan.rejected, scan.ignored)


def selection(args: argparse.Namespace, cache: Path, work: Path) -> dict[str, Any]:
    from bench_adapt import render

    from models.calibration import softmax
    from models.keypoints import keypoint_features
    from models.network import predict_logits
    from models.spec import class_names
    from tasks.label.suggest import choose

    names = class_names()
    base = synthetic_model(cache, args)
    test_x, test_y, _ = render("standin", names, 40, 12, seed=901)
    pool_x, pool_y, pool_p = render("standin", names, args.pool_per_class, 16, seed=905)
    feats = keypoint_features(pool_x)
    start = macro_f1(base, test_x, test_y, names)
    _log(f"selection: pool {len(pool_y)}, test {len(test_y)}, synthetic model {start}")
    budgets = list(range(args.step, args.max_per_class + 1, args.step))
    curves: dict[str, list[list[float]]] = {"auto": [], "random": []}
    used_by_round: list[str] = []
    for seed in range(args.seeds):
        for strategy in curves:
            model, taken, curve = base, np.zeros(0, np.int64), []
            for b in budgets:
                free = np.setdiff1d(np.arange(len(pool_y)), taken)
                probs = softmax(predict_logits(model, pool_x[free]))
                used, picks = choose(feats[free], probs, ROUND, strategy, feats[taken],
                                     len(names), seed)
                if strategy == "auto" and seed == 0:
                    used_by_round.append(used)
                taken = np.concatenate([taken, free[picks]])
                model = finetune(base, pool_x[taken], pool_y[taken], pool_p[taken], names,
                                 work / "round", args.finetune_steps, seed)
                curve.append(macro_f1(model, test_x, test_y, names))
                _log(f"seed {seed} {strategy} {b}/class ({used}): {curve[-1]}")
            curves[strategy].append(curve)
    return {"budgets": budgets, "start": start, "curves": curves, "used": used_by_round,
            **selection_verdicts(budgets, curves)}


def selection_verdicts(budgets: list[int], curves: dict[str, list[list[float]]]
                       ) -> dict[str, Any]:
    mean = {k: np.mean(v, axis=0) for k, v in curves.items()}
    goal = mean["random"][-1]
    reach = next((b for b, f in zip(budgets, mean["auto"], strict=True) if f >= goal), None)
    gaps = {b: round(float(mean["auto"][i] - mean["random"][i]), 4)
            for i, b in enumerate(budgets) if b in (5, 10)}
    return {"mean": {k: [round(float(x), 4) for x in v] for k, v in mean.items()},
            "random_at_max": round(float(goal), 4), "auto_reaches_it_at": reach,
            "label_efficiency_met": reach is not None and reach <= budgets[-1] // 2,
            "gap_at": gaps, "gap_met": all(g >= 0.05 for g in gaps.values())}


def flips(y: np.ndarray, confusion: np.ndarray | None, rng: np.random.Generator,
          share: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(labels with ``share`` flipped, the flipped indices): at random, or to each true
    class's most confused class when ``confusion`` is given."""
    out = y.copy()
    idx = rng.choice(len(y), max(1, round(share * len(y))), replace=False)
    for i in idx:
        if confusion is None:
            out[i] = (y[i] + rng.integers(1, confusion_size(y))) % confusion_size(y)
        else:
            row = confusion[y[i]].copy()
            row[y[i]] = -1
            out[i] = int(row.argmax())
    return out, idx


def confusion_size(y: np.ndarray) -> int:
    return int(y.max()) + 1


def audit_folder(frames: np.ndarray, y: np.ndarray, n_classes: int, seed: int,
                 model: Any = None) -> dict[str, Any]:
    """Precision and recall of the audit on planted flips, random and most-confused;
    ``model``: the production model whose embedding the ``cnn`` method may use."""
    from models.keypoints import keypoint_features
    from models.network import predict_embedding
    from tasks.label.audit import audit_labels, out_of_fold

    names = [str(i) for i in range(n_classes)]
    feats = [f[None] for f in keypoint_features(frames)]
    emb = None if model is None else [e[None] for e in predict_embedding(model, frames)]
    oof = out_of_fold(feats, y, n_classes, "logreg")
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (y, oof.argmax(1)), 1)
    out = {}
    for kind, conf in (("random", None), ("confused", confusion)):
        noisy, planted = flips(y, conf, np.random.default_rng(seed))
        audit = audit_labels(feats, noisy, names, embeddings=emb)
        flagged = {s["index"] for s in audit.suspects}
        hit = len(flagged & set(planted.tolist()))
        out[kind] = {"planted": len(planted), "flagged": len(flagged), "method": audit.method,
                     "precision": round(hit / max(1, len(flagged)), 3),
                     "recall": round(hit / len(planted), 3), "noisy": noisy,
                     "log_loss": {k: round(v, 3) for k, v in audit.oof_log_loss.items()},
                     "flagged_idx": sorted(flagged)}
    return out


def recovery(frames: np.ndarray, y: np.ndarray, people: np.ndarray, found: dict[str, Any],
             names: list[str], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The CNN (``retrain``'s labeled-only recipe) on the clean, flipped and flipped minus
    flagged folder; macro-F1 on other people; the share of the flips' cost recovered."""
    from bench_adapt import render
    from standin import write_labeled

    from flows.retrain import train_labeled_only

    test_x, test_y, _ = render("standin", names, 40, 12, seed=901)

    def score(tag: str, keep: np.ndarray, labels: np.ndarray) -> float:
        folder = work / tag
        write_labeled(folder, frames[keep], labels[keep], people[keep], names)
        scan, _, result = train_labeled_only(str(folder), args.epochs, 0)
        assert scan.class_names == names, "a class lost every file"
        f1 = macro_f1(result.model, test_x, test_y, names)
        _log(f"recovery {tag}: {f1}")
        return f1

    all_idx = np.arange(len(y))
    out = {"clean": score("clean", all_idx, y)}
    for kind in ("random", "confused"):
        noisy = found[kind]["noisy"]
        kept = np.setdiff1d(all_idx, found[kind]["flagged_idx"])
        flipped, excluded = score(f"{kind}-flipped", all_idx, noisy), \
            score(f"{kind}-excluded", kept, noisy)
        cost = out["clean"] - flipped
        out[kind] = {"flipped": flipped, "excluded": excluded, "cost": round(cost, 4),
                     "recovered": round((excluded - flipped) / cost, 3) if cost > 0 else None}
    return out


def audit(args: argparse.Namespace, work: Path, cache: Path) -> dict[str, Any]:
    from bench_adapt import render

    from models.spec import class_names
    from tasks.synth.generate import synth_dataset

    names = class_names()
    sx, sy, sp = render("standin", names, args.audit_per_class, 7, seed=903)
    g = synth_dataset(args.audit_per_class, seed=11)
    gy = np.array([names.index(x) for x in g.labels])
    model = synthetic_model(cache, args)   # the production model a team has by then
    res = {"standin": audit_folder(sx, sy, len(names), 0, model),
           "generator": audit_folder(g.frames, gy, len(names), 0, model)}
    for folder in res.values():
        _log("audit: " + ", ".join(f"{k} P {v['precision']} R {v['recall']}"
                                   for k, v in folder.items()))
    if not args.skip_recovery:
        res["recovery"] = recovery(sx, sy, sp, res["standin"], names, work, args)
    for folder in ("standin", "generator"):
        for v in res[folder].values():
            v.pop("noisy"), v.pop("flagged_idx")
    return res


def round_trip(work: Path) -> bool:
    """Label Studio's full export of a labeling folder reads as the same labels as its CSV."""
    import csv

    from models.spec import class_names
    from tasks.label.sheet import read_labels, write_sheet

    names = class_names()
    rows = [{"source_path": f"b/{i}.npy", "frame_index": i % 3, "content_sha256": f"{i:064x}",
             "predicted": names[i % 17], "confidence": 0.5, "model_version": "v1"}
            for i in range(40)]
    files = write_sheet(work / "sheet", rows, [b"png"] * 40, names, "/x/")
    lines = list(csv.DictReader(open(files["csv"])))
    for i, r in enumerate(lines):
        r["label"] = names[(i * 7) % 17]
    with open(files["csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, list(lines[0]))
        w.writeheader()
        w.writerows(lines)
    tasks = json.loads(Path(files["label_studio_tasks"]).read_text())
    export = [{**t, "annotations": [{"result": [{"from_name": "pose", "to_name": "image",
                                                 "type": "choices", "value": {"choices": [
                                                     names[(i * 7) % 17]]}}]}]}
              for i, t in enumerate(tasks)]
    (work / "export.json").write_text(json.dumps(export))
    return read_labels(Path(files["csv"])).equals(read_labels(work / "export.json"))


def markdown(res: dict[str, Any]) -> str:
    lines = ["# bench_labeling", ""]
    sel = res.get("selection")
    if sel:
        lines += [f"Selection (severe stand-in; synthetic model {sel['start']}; mean of "
                  f"{len(sel['curves']['auto'])} seeds; macro-F1 on 12 other people):", "",
                  "| labels a class | " + " | ".join(map(str, sel["budgets"])) + " |",
                  "|---|" + "---:|" * len(sel["budgets"])]
        for k in ("auto", "random"):
            lines.append(f"| {k} | " + " | ".join(f"{x:.3f}" for x in sel["mean"][k]) + " |")
        lines += ["", f"- auto's strategy per round: {', '.join(sel['used'])}",
                  f"- random at {sel['budgets'][-1]} a class: {sel['random_at_max']}; auto "
                  f"reaches it at {sel['auto_reaches_it_at']} a class (target <= "
                  f"{sel['budgets'][-1] // 2}): "
                  f"{'met' if sel['label_efficiency_met'] else 'MISSED'}",
                  f"- auto minus random at 5 and 10 a class: {sel['gap_at']} (target >= 0.05): "
                  f"{'met' if sel['gap_met'] else 'MISSED'}", ""]
    aud = res.get("audit")
    if aud:
        lines += ["Audit (5 % of a 40-a-class folder flipped; auto's choice of method):", "",
                  "| folder | flips | method | planted | flagged | precision | recall |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for folder in ("standin", "generator"):
            for kind, v in aud[folder].items():
                lines.append(f"| {folder} | {kind} | {v['method']} | {v['planted']} | "
                             f"{v['flagged']} | "
                             f"{v['precision']} | {v['recall']} |")
        rec = aud.get("recovery")
        if rec:
            lines += ["", f"CNN macro-F1 (stand-in folder, other people): clean {rec['clean']}"]
            for kind in ("random", "confused"):
                r = rec[kind]
                lines.append(f"- {kind} flips: flipped {r['flipped']}, --exclude-suspect "
                             f"{r['excluded']}, recovered {r['recovered']} of the cost "
                             f"{r['cost']} (target >= 0.5)")
    if "round_trip" in res:
        lines += ["", f"Round trip Label Studio export = CSV: {res['round_trip']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-per-class", type=int, default=40)
    ap.add_argument("--step", type=int, default=5)
    ap.add_argument("--pool-per-class", type=int, default=150)
    ap.add_argument("--finetune-steps", type=int, default=200)
    ap.add_argument("--audit-per-class", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--min-steps", type=int, default=800)
    ap.add_argument("--skip-selection", action="store_true")
    ap.add_argument("--skip-audit", action="store_true")
    ap.add_argument("--skip-recovery", action="store_true")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "cache")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from bench_adapt import _progress

    from flows.runtime.progress import add_stage_listener

    add_stage_listener(_progress)   # the flow's task bodies report here, not to a run log
    t0 = time.monotonic()
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-labeling-") as tmp:
        work = Path(tmp)
        res["round_trip"] = round_trip(work)
        if not args.skip_audit:
            res["audit"] = audit(args, work, args.cache)
        if not args.skip_selection:
            res["selection"] = selection(args, args.cache, work)
    res["seconds"] = round(time.monotonic() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labeling.json").write_text(json.dumps(res, indent=1, default=str))
    (args.out / "labeling.md").write_text(markdown(res))
    print(markdown(res))
    if args.json:
        print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
