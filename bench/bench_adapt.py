"""Learning from the heatmaps users actually have: few labels, synthetic transfer, adaptation.

    .venv/bin/python bench/bench_adapt.py [--sizes 0,5,10,20,50,150] [--standins standin,shift2]
        [--input-mode raw] [--strategies target,finetune,mixed] [--rounds 2] [--out DIR]
        [--json]

Why: ``retrain``'s defaults must do well on a team's own frames, which our generator never
drew. Two stand-ins for real data, neither tuned on: ``standin`` (``bench/standin.py``, an
independent renderer of the pose spec: anisotropic and non-Gaussian peaks, a coarse grid
upsampled and quantised like a ViTPose head, its own crops and people) and ``shift2``
(our own generator with every nuisance factor at 2x its default).

Per stand-in: a test set of people nobody trains on, 1,200 unlabeled frames of other people
(the production stream), and for each N labeled frames a class (7 more people) a labeled
folder. Configurations, all through ``retrain``'s own task bodies:

- ``target``: the labeled folder alone (``--source none``);
- ``synthetic``: our generator's frames alone (N = 0);
- ``finetune``: pretrained on synthetic frames, fine-tuned on the labeled folder;
- ``mixed``: both at once, the user's frames repeated to 40 % of the files;
- each ``+adapt``: then AdaBN and self-training on the unlabeled frames, kept only if they
  measure better on the labeled folder's validation split (label-free guard at N = 0).

Also the keypoint baselines (logistic regression, gradient boosting) on the same data as the
default configuration. Writes ``adapt.md``, ``adapt.json`` and ``adapt.png`` under
``--out``, and prints the targets' verdicts:

- N = 0: adaptation closes >= 50 % of the gap between synthetic-only and 150 target labels;
- N = 10, defaults: macro-F1 >= 90 % of the 150-label model's;
- no configuration the defaults choose below synthetic-only.
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
TEST_PER_CLASS, UNLABELED_PER_CLASS, LABELED_PEOPLE = 40, 72, 7
STRENGTH = ["severe"]  # the stand-in's preset (--strength)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _progress(ev: dict[str, Any]) -> None:
    """The flow's progress events: every 10th epoch and every message."""
    if "epoch" in ev and ev["epoch"] % 10 == 0:
        _log(f"  epoch {ev['epoch']}/{ev['epochs']} val_loss {ev['logs'].get('val_loss', 0):.3f}")
    elif "message" in ev:
        _log(f"  {ev['stage']}: {ev['message']}")


def render(standin: str, names: list[str], per_class: int, people: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, labels, people) of a stand-in; a seed is a new set of people."""
    if standin == "standin":
        from standin import render_standin

        return render_standin(names, per_class, people, seed, strength=STRENGTH[0])
    from tasks.synth.generate import synth_dataset
    from tasks.synth.nuisance import shifted

    s = synth_dataset(per_class, seed=seed, nuisance=shifted(2.0))
    return s.frames, np.array([names.index(x) for x in s.labels]), np.asarray(s.subjects)


def labeled_folder(root: Path, standin: str, names: list[str], n: int, seed: int) -> Path:
    """A labeled folder of ``n`` frames a class from ``LABELED_PEOPLE`` people."""
    from standin import write_labeled

    frames, labels, people = render(standin, names, n, LABELED_PEOPLE, seed)
    write_labeled(root, frames, labels, people, names)
    return root


def train_config(cfg: str, labeled: Path | None, stream: np.ndarray | None, seed: int,
                 cache: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """One configuration through the retrain flow's task bodies: (model, what was done)."""
    import flows.retrain as rt
    from tasks.adapt.gather import Feedback, gather_training_set
    from tasks.train.augment import AugmentConfig
    from tasks.train.dataset import Scan, scan_labeled

    scan = scan_labeled(labeled, "subject") if labeled else Scan([], [])
    source = "none" if cfg == "target" else "synthetic"
    ts, decision = gather_training_set(scan, str(labeled), Feedback(), source=source,
                                       cache_root=cache, seed=seed, max_frames=4096,
                                       transfer_below=100, synthetic_per_class=150)
    augment = AugmentConfig()
    strategy = "mixed" if cfg == "mixed" else "finetune"
    result, info = rt.train_task.fn(ts, decision, strategy, args.epochs, seed, 64, False, 0.0,
                                    0, 4096, augment, {"input_mode": args.input_mode},
                                    args.min_steps, cache)
    out = {"model": result.model, "ts": ts, "seconds": round(result.seconds, 1)}
    if stream is not None:
        t0 = time.monotonic()
        out["adapted"], out["adaptation"] = rt.adapt_task.fn(result.model, stream, ts, seed,
                                                             4096, augment, 300, args.rounds)
        out["adapt_seconds"] = round(time.monotonic() - t0, 1)
    return out, info


def macro_f1(model: Any, frames: np.ndarray, labels: np.ndarray, names: list[str]) -> float:
    from models.calibration import softmax
    from models.network import predict_logits
    from tasks.train.evaluate import classification_metrics

    return round(float(classification_metrics(labels, softmax(predict_logits(model, frames)),
                                              names)["macro_f1"]), 4)


def baselines(ts: Any, frames: np.ndarray, labels: np.ndarray, names: list[str]
              ) -> dict[str, float]:
    """The keypoint baselines on the same training data as the CNN they stand beside."""
    from models.features import fit_predict
    from models.keypoints import keypoint_features
    from tasks.train.dataset import features_of
    from tasks.train.evaluate import classification_metrics

    x, y = features_of(ts.scan, ts.split.train + ts.synthetic.get("train", []))
    feats = keypoint_features(frames)
    return {m: round(float(classification_metrics(
        labels, fit_predict(m, x, y, feats, len(names))[0], names)["macro_f1"]), 4)
        for m in ("logreg", "hgb")}


def run_standin(standin: str, args: argparse.Namespace, cache: Path, work: Path
                ) -> dict[str, Any]:
    """Every configuration at every size on one stand-in: ``{size: {config: macro-F1}}``."""
    from models.spec import class_names

    names = class_names()
    test_x, test_y, _ = render(standin, names, TEST_PER_CLASS, 12, seed=901)
    stream = render(standin, names, UNLABELED_PER_CLASS, 16, seed=902)[0]
    _log(f"{standin}: test {len(test_y)} frames, unlabeled stream {len(stream)} frames")
    rows: dict[str, dict[str, Any]] = {}
    for n in args.sizes:
        folder = labeled_folder(work / f"{standin}-{n}", standin, names, n, 903) if n else None
        configs = ["synthetic"] if n == 0 else args.strategies
        row: dict[str, Any] = {}
        for cfg in configs:
            _log(f"{standin} N={n}: {cfg}")
            out, info = train_config(cfg, folder, stream if args.rounds >= 0 else None,
                                     args.seed, cache, args)
            row[cfg] = macro_f1(out["model"], test_x, test_y, names)
            if "adapted" in out:
                row[f"{cfg}+adapt"] = macro_f1(out["adapted"], test_x, test_y, names)
                row[f"{cfg}+adapt kept"] = out["adaptation"]["kept"]
            row[f"{cfg} seconds"] = out["seconds"]
            if cfg == default_config(n) or n == 0:
                row["baselines"] = baselines(out["ts"], test_x, test_y, names)
            _log(f"{standin} N={n}: {cfg} {row[cfg]} adapted {row.get(f'{cfg}+adapt')}")
        rows[str(n)] = row
    return rows


def default_config(n: int) -> str:
    """What ``retrain``'s defaults choose for N labeled frames a class."""
    from flows.settings import Settings

    s = Settings()
    return "synthetic" if n == 0 else ("target" if n >= s.transfer_below
                                       else s.transfer_strategy)


def verdicts(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's three targets on one stand-in. What the defaults deliver at a size is the
    default configuration after adaptation (the candidate adaptation kept, which may be the
    unadapted model), never the better of the two picked with the test labels."""
    synth = rows["0"]["synthetic"]
    ref = rows.get("150", {}).get("target")

    def delivered(n: str) -> float | None:
        cfg = default_config(int(n))
        row = rows[n]
        return row.get(f"{cfg}+adapt", row.get(cfg))

    out: dict[str, Any] = {"synthetic_only": synth, "target_150": ref,
                           "defaults": {n: delivered(n) for n in rows}}
    if ref is not None and ref != synth:
        out["gap_closed_at_0"] = round((delivered("0") - synth) / (ref - synth), 3)
    if "10" in rows and ref:
        out["n10_share_of_150"] = round(delivered("10") / ref, 3)
    chosen = [v for v in out["defaults"].values() if v is not None]
    out["defaults_never_below_synthetic"] = all(c >= synth for c in chosen)
    out["defaults_vs_best_baseline"] = {
        n: round(delivered(n) - max(r["baselines"].values()), 4)
        for n, r in rows.items() if r.get("baselines")}
    return out


def write(out_dir: Path, results: dict[str, Any], args: argparse.Namespace) -> None:
    """adapt.md (one table per stand-in), adapt.json and adapt.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapt.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    lines = [f"Measured by `bench/bench_adapt.py` (input mode {args.input_mode}, seed "
             f"{args.seed}, stand-in preset {args.strength}); macro-F1 on "
             f"{TEST_PER_CLASS} test frames a class of 12 people nobody trained on.", ""]
    for standin, res in results["standins"].items():
        cfgs = ["synthetic", *args.strategies]
        lines += [f"### {standin}", "", "| labels a class | " + " | ".join(
            f"{c} | {c}+adapt" for c in cfgs) + " | logreg | hgb |",
            "|---:|" + "---:|" * (2 * len(cfgs) + 2)]
        for n, row in res["rows"].items():
            cells = [f"{row.get(c, '-')} | {row.get(f'{c}+adapt', '-')}" for c in cfgs]
            base = row.get("baselines", {})
            lines.append(f"| {n} | " + " | ".join(cells)
                         + f" | {base.get('logreg', '-')} | {base.get('hgb', '-')} |")
        lines += ["", f"Targets: `{res['verdicts']}`", ""]
    (out_dir / "adapt.md").write_text("\n".join(lines), encoding="utf-8")
    plot(out_dir / "adapt.png", results, args)


def plot(path: Path, results: dict[str, Any], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    standins = results["standins"]
    fig, axes = plt.subplots(1, len(standins), figsize=(6 * len(standins), 4), squeeze=False)
    for ax, (standin, res) in zip(axes[0], standins.items(), strict=True):
        sizes = [int(n) for n in res["rows"] if n != "0"]
        for cfg in args.strategies:
            for suffix, style in (("", "-"), ("+adapt", "--")):
                ys = [res["rows"][str(n)].get(cfg + suffix) for n in sizes]
                ax.plot(sizes, ys, style, marker="o", label=cfg + suffix)
        zero = res["rows"]["0"]
        ax.axhline(zero["synthetic"], color="grey", lw=1, label="synthetic only")
        if "synthetic+adapt" in zero:
            ax.axhline(zero["synthetic+adapt"], color="grey", ls="--", lw=1,
                       label="synthetic + adapt")
        if sizes:
            ax.set_xscale("log")
        ax.set(title=standin, xlabel="labeled target frames a class", ylabel="macro-F1",
               ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0,5,10,20,50,150")
    ap.add_argument("--standins", default="standin,shift2")
    ap.add_argument("--strategies", default="target,finetune,mixed")
    ap.add_argument("--input-mode", default="raw")
    ap.add_argument("--rounds", type=int, default=2,
                    help="self-training rounds after AdaBN; -1: no adaptation at all")
    ap.add_argument("--strength", default="severe", help="the stand-in's preset")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--min-steps", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "cache")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",")]
    if 0 not in args.sizes:
        args.sizes.insert(0, 0)
    args.strategies = args.strategies.split(",")
    STRENGTH[0] = args.strength
    from flows.runtime.progress import add_stage_listener

    add_stage_listener(_progress)
    t0 = time.monotonic()
    results: dict[str, Any] = {"standins": {}}
    with tempfile.TemporaryDirectory(prefix="bench-adapt-") as tmp:
        for standin in args.standins.split(","):
            rows = run_standin(standin, args, args.cache, Path(tmp))
            results["standins"][standin] = {"rows": rows, "verdicts": verdicts(rows)}
            write(args.out, results, args)
    results["seconds"] = round(time.monotonic() - t0, 1)
    write(args.out, results, args)
    print((args.out / "adapt.md").read_text(encoding="utf-8"))
    if args.json:
        print(json.dumps({k: v["verdicts"] for k, v in results["standins"].items()}))


if __name__ == "__main__":
    main()
