"""Command: generate — write a synthetic data root (labeled/, incoming/, incoming_labels.csv).

The work is ``tasks.synth.generate.generate_dataset``; this module parses flags, reports progress on
stderr and prints the summary. NumPy and the generator are imported inside the command so
``posebatch --help`` stays instant (``tasks.synth.nuisance`` is stdlib only: it names the factors).

``--shift``/``--factor`` make distribution-shifted data for robustness tests: named factor
groups of ``tasks.synth.nuisance`` moved by ``shift - 1`` steps from the preset.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import DataOpt, JsonOpt, emit, fail, local_path, progress_enabled, setup
from tasks.synth.nuisance import FACTORS

PROGRESS_ABOVE = 2000  # files: smaller runs finish in about a second and print no progress


def _progress(total: int):
    """A ``progress(done, total)`` callback: a rich bar on a terminal, else a log line for
    every ~10% (stderr, so stdout stays clean for ``--json``). Returns (callback, close)."""
    if total < PROGRESS_ABOVE:
        return None, lambda: None
    if progress_enabled():
        from rich.progress import Progress

        bar = Progress(transient=True, console=None)
        bar.start()
        task = bar.add_task("generating", total=total)
        return (lambda done, _t: bar.update(task, completed=done)), bar.stop
    step = max(total // 10, 1)
    state = {"next": step}

    def log(done: int, _total: int) -> None:
        if done >= state["next"] or done == total:
            print(f"generate: {done}/{total} files", file=sys.stderr, flush=True)
            state["next"] = done + step

    return log, lambda: None


def generate(
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder to write labeled/, incoming/ and incoming_labels.csv into "
        "(default: the data root).", show_default=False, parser=local_path)] = None,
    per_class: Annotated[int, typer.Option(
        "--per-class", min=0, help="Labeled frames per class (17 classes).")] = 100,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed: same seed, same "
                                      "bytes.")] = 0,
    incoming_batches: Annotated[int, typer.Option(
        "--incoming-batches", min=0, help="Incoming batch folders to write (new people, "
        "labels in incoming_labels.csv).")] = 0,
    incoming_per_batch: Annotated[int, typer.Option(
        "--incoming-per-batch", min=0, help="Frames (files) per incoming batch.")] = 100,
    hard: Annotated[bool, typer.Option(
        "--hard", help="More occlusion, box jitter and noise: a robustness test set.")] = False,
    shift: Annotated[float, typer.Option(
        "--shift", min=0.0, metavar="FLOAT", help="Move the nuisance factors from the "
        "preset (normal, or --hard) by shift-1 steps: 1 = the preset, 2 = about twice the "
        "variation and artefact rates, 0 = the factors off. See tasks/synth/nuisance.py.")] = 1.0,
    factors: Annotated[list[str] | None, typer.Option(
        "--factor", metavar="NAME", help="Factor group --shift moves (repeatable; default all): "
        f"{', '.join(FACTORS)}.", show_default=False)] = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate ViTPose-like synthetic heatmaps: labeled/<class>/<subject>/<take>_f<frame>.npy
    and incoming/batch_<k>/*.npy (each batch closed by a _SUCCESS marker)."""
    settings = setup(data)
    target = out if out is not None else settings.data_root
    from tasks.synth.generate import generate_dataset
    from tasks.synth.nuisance import HARD, NORMAL, shifted

    names = list(dict.fromkeys(factors)) if factors else list(FACTORS)
    try:
        nuisance = shifted(shift, names, base=HARD if hard else NORMAL)
    except ValueError as exc:
        fail(str(exc), as_json)
        return
    n_in = incoming_batches * incoming_per_batch
    callback, close = _progress(per_class * 17 + n_in)
    try:
        summary = generate_dataset(target, per_class, seed, incoming_batches,
                                   incoming_per_batch, hard, nuisance, progress=callback)
    except (OSError, ValueError) as exc:
        close()
        fail(f"cannot generate into {target}: {exc}", as_json)
        return
    close()
    summary.update(ok=True, shift=shift, factors=names)
    human = (f"wrote {summary['labeled']} labeled and {summary['incoming']} incoming files "
             f"({summary['incoming_batches']} batches) to {target} in {summary['seconds']} s "
             f"({summary['files_per_second']} files/s)")
    if shift != 1:
        human += f"; nuisance shift {shift:g} on {', '.join(names)}"
    emit(summary, as_json, human)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("generate")(generate)
