"""Command: ``posebatch retrain``: train, compare, evaluate, register, maybe promote.

Nothing heavy at import time: Prefect and TensorFlow load when the command runs. The
option choices come from ``tasks/train/choices.py`` (standard library only).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.common import (
    DataOpt,
    JsonOpt,
    emit,
    fail,
    local_path,
    progress_enabled,
    registry_location,
    setup,
)
from tasks.train.choices import check_retrain_options


def progress_printer(as_json: bool) -> tuple[Any, Any]:
    """(listener, closer): a rich bar on a terminal, plain lines on stderr otherwise."""
    if progress_enabled():
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(),
                       TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                       console=Console(stderr=True), transient=False)
        bar.start()
        tasks: dict[str, Any] = {}

        def listener(ev: dict[str, Any]) -> None:
            if "epoch" in ev:
                if "train" not in tasks:
                    tasks["train"] = bar.add_task("training", total=ev["epochs"])
                logs = ev["logs"]
                desc = (f"epoch {ev['epoch']} loss {logs.get('loss', 0):.3f} "
                        f"val_loss {logs.get('val_loss', 0):.3f} "
                        f"val_acc {logs.get('val_accuracy', 0):.3f}")
                bar.update(tasks["train"], completed=ev["epoch"], description=desc)
            elif "message" in ev:
                bar.console.print(f"[dim]{ev['stage']}:[/dim] {ev['message']}")
            elif "trial" in ev:
                bar.console.print(f"tune: trial {ev['trial']} val_loss {ev['val_loss']}")
                tasks.pop("train", None)

        return listener, bar.stop

    def plain(ev: dict[str, Any]) -> None:
        if "epoch" in ev:
            logs = " ".join(f"{k}={v:.4f}" for k, v in sorted(ev["logs"].items()))
            line = f"epoch {ev['epoch']}/{ev['epochs']} {logs}"
        elif "message" in ev:
            line = f"{ev['stage']}: {ev['message']}"
        elif "trial" in ev:
            line = f"tune: trial {ev['trial']} {ev['hyperparameters']} val_loss {ev['val_loss']}"
        elif "done" in ev:
            line = f"scan: {ev['done']}/{ev['total']} files"
        else:
            return
        print(line, file=sys.stderr, flush=True)

    return plain, lambda: None


def _num(v: float | None) -> str:
    return "    -   " if v is None else f"{v:8.4f}"


def _human(r: dict[str, Any]) -> str:
    lines = [f"model {r['version']}: {'PROMOTED' if r['promoted'] else 'not promoted'}"
             f" ({r['reason']})",
             f"data: {r['files']} files, {r['frames']} frames, {r['rejected']} rejected; "
             f"{r['split']['method']} split {r['split']['frames']}"]
    if r["split"]["note"]:
        lines.append(f"note: {r['split']['note']}")
    lines.append("test split:       accuracy  macro-F1  ECE")
    for name, m in r["metrics"].items():
        lines.append(f"  {name:<14} {_num(m['accuracy'])}  {_num(m['macro_f1'])}  "
                     f"{_num(m['ece'])}")
    lines.append("shifted test:     accuracy  macro-F1  ECE")
    for name, m in r.get("shift_metrics", {}).items():
        lines.append(f"  {name:<14} {_num(m['accuracy'])}  {_num(m['macro_f1'])}  "
                     f"{_num(m['ece'])}")
    src = r.get("sources") or {}
    if src:
        ad = src.get("adaptation") or {}
        lines.append(f"source: {src['source']} ({src['why']}); unlabeled adaptation kept "
                     f"{ad.get('kept', 'none')}" + (f" ({ad['why']})" if ad.get("why") else ""))
    for name, m in (r.get("target_metrics") or {}).items():
        lines.append(f"held-out feedback frames: {name} macro-F1 {_num(m['macro_f1'])}")
    lines.append(f"report: {Path(r['path']) / 'report.md'}  ({r['seconds']} s)")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("retrain")(_retrain_cmd)


def _retrain_cmd(
    labeled: Annotated[Path | None, typer.Option(
        "--labeled", help="Labeled folder <class>/**/*.npy (default DATA/labeled).",
        parser=local_path)] = None,
    registry: Annotated[str | None, typer.Option(
        "--registry", help="Model registry, a folder or s3://bucket/prefix "
        "(default DATA/registry).",
        parser=registry_location)] = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping).")] = 30,
    seed: Annotated[int, typer.Option(help="Seed: same seed, data, code -> same model.")] = 0,
    tune: Annotated[bool, typer.Option(
        "--tune", help="Bounded KerasTuner search over the CNN's main knobs first.")] = False,
    tune_budget: Annotated[float, typer.Option(
        help="Time budget of --tune in seconds.")] = 600.0,
    tune_trials: Annotated[int, typer.Option(help="Maximum trials of --tune.")] = 8,
    promote: Annotated[str, typer.Option(
        help="if-better: only if test macro-F1 >= production's on the same split + "
             "margin, and macro-F1 on the shifted split >= production's - |margin|; "
             "always; never.")] = "if-better",
    margin: Annotated[float | None, typer.Option(
        help="Promotion margin in macro-F1 (default $POSEBATCH_PROMOTION_MARGIN).")] = None,
    group_by: Annotated[str, typer.Option(
        help="Split groups: subject (first sub-folder, else file-name prefix), prefix "
             "(sub-folders + file-name prefix = take), none (file split).")] = "subject",
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 64,
    source: Annotated[str, typer.Option(
        help="Our generator as a source domain: auto (when the smallest class has fewer "
             "than $POSEBATCH_TRANSFER_BELOW frames, default 200), synthetic, none.")] = "auto",
    strategy: Annotated[str | None, typer.Option(
        help="With a synthetic source: finetune (pretrain on synthetic, fine-tune on "
             "yours) or mixed (both at once, yours weighted up) [default: "
             "$POSEBATCH_TRANSFER_STRATEGY, mixed].")] = None,
    unlabeled: Annotated[str, typer.Option(
        help="Adapt to unlabeled target frames: auto (what DATA/output says was classified "
             "in the last $POSEBATCH_ADAPT_DAYS days), none, or a local folder of .npy "
             "files.")] = "auto",
    feedback: Annotated[bool, typer.Option(
        "--feedback/--no-feedback",
        help="Learn from labels fed back with `posebatch feedback` (a held-out share judges "
             "the model on your heatmaps).")] = True,
    input_mode: Annotated[str | None, typer.Option(
        help="CNN input: raw or canonical (decoded and redrawn) [default: "
             "$POSEBATCH_INPUT_MODE, raw].")] = None,
    exclude_suspect: Annotated[bool, typer.Option(
        "--exclude-suspect", help="Leave out the labeled files the label audit flags "
        "(`posebatch label audit`); the metadata and report name them.")] = False,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a model on labeled folders, compare methods, evaluate on held-out groups,
    register it, and promote it only if it beats production on the new test split."""
    _check_options(promote, group_by, epochs, batch_size, as_json, source, strategy,
                   input_mode, unlabeled)
    settings = setup(data, prefect=True)
    labeled_dir = labeled or settings.labeled_dir
    if source != "synthetic" or Path(labeled_dir).exists():  # a typo'd folder is an error
        _check_labeled(labeled_dir, group_by, as_json, source_ok=source != "none")
    params = dict(source=source, strategy=strategy, unlabeled=unlabeled, feedback=feedback,
                  input_mode=input_mode, exclude_suspect=exclude_suspect,
        labeled_dir=str(labeled_dir),
        registry_dir=str(registry or settings.registry_dir), epochs=epochs,
        seed=seed, tune=tune, tune_budget_seconds=tune_budget,
        tune_max_trials=tune_trials, promote=promote, margin=margin,
        group_by=group_by, batch_size=batch_size, data_root=str(settings.data_root))
    result = _run_flow(params, as_json)
    emit(result, as_json, _human(result))


def _check_options(promote: str, group_by: str, epochs: int, batch_size: int,
                   as_json: bool, source: str = "auto", strategy: str | None = None,
                   input_mode: str | None = None, unlabeled: str = "auto") -> None:
    """Reject bad choices before Prefect starts, so a typo costs no server start-up."""
    from tasks.adapt.gather import check_unlabeled

    try:
        check_retrain_options(promote, group_by, epochs, batch_size, source,
                              strategy or "mixed", input_mode or "raw")
        check_unlabeled(unlabeled)
    except ValueError as exc:
        fail(str(exc), as_json)


def _check_labeled(labeled_dir: Path, group_by: str, as_json: bool,
                   source_ok: bool = False) -> None:
    """A one-line error for a missing or one-class labeled folder, before any training
    (``source_ok``: an empty folder is fine, our synthetic frames may be all there is)."""
    from tasks.train.dataset import list_labeled

    try:
        classes, _files, _ = list_labeled(labeled_dir, group_by)
    except FileNotFoundError as exc:
        fail(str(exc), as_json)
    if len(classes) < 2 and not (len(classes) == 0 and source_ok):
        fail(f"{labeled_dir}: need at least 2 class folders holding .npy files, found "
             f"{len(classes)}", as_json)


def _run_flow(params: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """Run the retrain flow with progress attached; the listener is removed even on failure."""
    from flows.retrain import retrain_flow
    from flows.runtime.progress import add_stage_listener

    listener, close = progress_printer(as_json)
    remove = add_stage_listener(listener)
    try:
        return retrain_flow(**params)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc).splitlines()[0], as_json)
        raise  # unreachable: fail() always exits
    finally:
        remove()
        close()
