"""Command: ``posebatch demo``, the README's first command: the main job end to end.

It chains what a user would run by hand (``generate``, ``retrain``, ``classify``) on one data
root, skipping what is already there, so a second ``make demo`` only classifies what is new.
Each step is the same code the real command runs; nothing here is demo-only except the final
check of the predictions against the generator's ``incoming_labels.csv``.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.common import DataOpt, JsonOpt, emit, fail, setup

# Sized so that generating and retraining fit in a few minutes on 2 CPU cores while the CNN
# still reaches the accuracy the retraining issue asks for (see bench/bench_train.py).
DEMO_PER_CLASS = 300
DEMO_EPOCHS = 15
DEMO_BATCHES = 3
DEMO_PER_BATCH = 200


def _say(message: str, as_json: bool) -> None:
    """Step announcements go to stderr: stdout stays clean for ``--json``."""
    if not as_json:
        print(f"demo: {message}", file=sys.stderr, flush=True)


def labels_accuracy(predictions: Any, labels_csv: Path) -> dict[str, Any] | None:
    """Share of predicted frames whose label matches ``incoming_labels.csv`` (the generator's
    ground truth, keyed by path relative to ``incoming/``); None when nothing overlaps."""
    if not labels_csv.is_file():
        return None
    with open(labels_csv, newline="", encoding="utf-8") as fh:
        truth = {row["source_path"]: row["label"] for row in csv.DictReader(fh)}
    pairs = [(truth[p], lab) for p, lab in zip(predictions.column("source_path").to_pylist(),
                                               predictions.column("label").to_pylist(),
                                               strict=True) if p in truth]
    if not pairs:
        return None
    right = sum(t == p for t, p in pairs)
    return {"frames": len(pairs), "correct": right, "accuracy": round(right / len(pairs), 4)}


def _human(result: dict[str, Any]) -> str:
    gen, model, cls = result["generate"], result["model"], result["classify"]
    lines = [f"posebatch demo finished in {result['seconds']:.0f} s; data root "
             f"{result['data_root']}"]
    lines.append("  data:     " + (f"generated {gen['labeled']} labeled and {gen['incoming']} "
                                   f"incoming files ({gen['incoming_batches']} batches)"
                                   if gen.get("generated") else "already present (kept)"))
    if model.get("trained"):
        m = model["metrics"]
        cmp = ", ".join(f"{k} {v['macro_f1']:.3f}" for k, v in m.items()
                        if k != "cnn" and v.get("macro_f1") is not None)
        state = "promoted" if model["promoted"] else "not promoted"
        lines.append(f"  model:    trained {model['version']} ({state}); test macro-F1 on "
                     f"held-out people: cnn {m['cnn']['macro_f1']:.3f} ({cmp})")
    else:
        lines.append(f"  model:    production model {model['version']} (kept)")
    lines.append(f"  classify: {cls['classified']} new file(s), {cls['frames']} frame(s), "
                 f"{cls['rejected']} rejected, {cls['already_processed']} already processed; "
                 f"{cls['files_per_second']:.0f} files/s")
    labels = ", ".join(f"{k} {v}" for k, v in sorted(cls["labels"].items()))
    if labels:
        lines.append(f"  labels:   {labels}")
    acc = result["check"]
    if acc:
        lines.append(f"  check:    {acc['correct']}/{acc['frames']} frames match "
                     f"incoming_labels.csv (accuracy {acc['accuracy']:.3f})")
    lines.append(f"  outputs:  {result['output_dir']}/predictions (Parquet, by day)")
    lines.append("next: posebatch query --summary | posebatch report --to report.html | "
                 "posebatch models list | posebatch show FILE.npy")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add ``demo``."""
    app.command("demo")(demo)


def demo(
    per_class: Annotated[int, typer.Option(
        "--per-class", min=2, help="Labeled frames per class to generate.")] = DEMO_PER_CLASS,
    epochs: Annotated[int, typer.Option(
        "--epochs", min=1, help="Maximum training epochs.")] = DEMO_EPOCHS,
    incoming_batches: Annotated[int, typer.Option(
        "--incoming-batches", min=1, help="Incoming batches to generate.")] = DEMO_BATCHES,
    incoming_per_batch: Annotated[int, typer.Option(
        "--incoming-per-batch", min=1, help="Files per incoming batch.")] = DEMO_PER_BATCH,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed for data and model.")] = 0,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the main job end to end: generate demo data (if none), train and register a
    model (if none is in production), classify the incoming batches, print a summary."""
    t0 = time.monotonic()
    settings = setup(data, prefect=True)
    root = settings.data_root
    # The demo narrates its steps itself; Prefect's per-task lines still reach the API
    # (and its UI) but not the terminal, unless the user asked for them.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows.runtime.claim import Busy
    from flows.runtime.ephemeral import start_early_server

    try:  # before any thread: overlaps the steps
        server = start_early_server(settings.early_server)
    except Busy as exc:  # the data root's server (serve, watch) does not answer
        fail(str(exc), as_json, code=3)
    gen = _generate_step(settings, per_class, seed, incoming_batches, incoming_per_batch,
                         as_json)
    if server is not None:
        server.wait()
    model = _model_step(settings, epochs, seed, as_json)
    cls, version = _classify_step(settings, as_json)
    result = {"ok": True, "data_root": str(root), "output_dir": str(settings.output_dir),
              "generate": gen, "model": model,
              "classify": {k: cls[k] for k in (
                  "flow_run_id", "model_version", "files_seen", "new", "classified",
                  "frames", "rejected", "already_processed", "labels",
                  "files_per_second")},
              "check": _check(settings, version),
              "seconds": round(time.monotonic() - t0, 1)}
    emit(result, as_json, _human(result))


def _generate_step(settings: Any, per_class: int, seed: int, incoming_batches: int,
                   incoming_per_batch: int, as_json: bool) -> dict[str, Any]:
    """Generate demo data only into an empty labeled folder: a rerun never overwrites data."""
    from tasks.synth.generate import generate_dataset

    root = settings.data_root
    has_labeled = settings.labeled_dir.is_dir() and any(settings.labeled_dir.rglob("*.npy"))
    if has_labeled:
        _say(f"{settings.labeled_dir} already holds data: not generating", as_json)
        return {"generated": False}
    _say(f"generating demo data into {root} ({per_class} frames per class, "
         f"{incoming_batches} incoming batches of {incoming_per_batch})", as_json)
    try:
        return {"generated": True, **generate_dataset(
            root, per_class, seed, incoming_batches, incoming_per_batch)}
    except OSError as exc:
        fail(f"cannot write demo data into {root}: {exc}", as_json)
    raise AssertionError("unreachable: fail() always exits")


def _model_step(settings: Any, epochs: int, seed: int, as_json: bool) -> dict[str, Any]:
    """Train a model only when no production model exists: a rerun keeps the one it has."""
    from models.registry import Registry

    version = Registry(settings.registry_dir).production_version()
    if version is not None:
        _say(f"production model {version} found: not retraining", as_json)
        return {"trained": False, "version": version}
    from flows.cli.retrain import progress_printer
    from flows.retrain import retrain_flow
    from flows.runtime.progress import add_stage_listener

    _say(f"no production model: training one (up to {epochs} epochs)", as_json)
    listener, close = progress_printer(as_json)
    remove = add_stage_listener(listener)
    try:
        out = retrain_flow(data_root=str(settings.data_root), epochs=epochs, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        fail(f"retraining failed: {str(exc).splitlines()[0]}", as_json)
    finally:
        remove()
        close()
    return {"trained": True, "version": out["version"], "promoted": out["promoted"],
            "metrics": out["metrics"], "seconds": out["seconds"]}


def _classify_step(settings: Any, as_json: bool) -> tuple[dict[str, Any], str]:
    """(classify summary, model version): the same flow as ``posebatch classify``, with the
    production model resolved once so the check below reads that version's predictions."""
    from flows.cli.classify import run_classify
    from models.registry import Registry

    if not settings.incoming_dir.is_dir():
        fail(f"{settings.incoming_dir} does not exist: nothing to classify (run "
             "`posebatch generate --incoming-batches 3` or add batches)", as_json)
    _say(f"classifying new batches in {settings.incoming_dir}", as_json)
    version = Registry(settings.registry_dir).resolve().version
    params = {"data_root": str(settings.data_root), "model_version": version,
              "batch_size": settings.batch_size}
    cls = run_classify(params, str(settings.registry_dir), version, settings.batch_size,
                       as_json)
    return cls, version


def _check(settings: Any, version: str) -> dict[str, Any] | None:
    """The predictions against the generator's ground truth; None when there is none."""
    from tasks.read.query import QueryError, read_predictions

    try:
        preds = read_predictions(settings.output_dir, model_versions=[version],
                                 columns=["source_path", "label"])
        return labels_accuracy(preds, settings.data_root / "incoming_labels.csv")
    except QueryError:  # nothing classified yet (e.g. every file rejected)
        return None
