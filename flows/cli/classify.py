"""Commands: ``classify`` (the classification flow) and ``compact`` (merge small parts).

No TensorFlow or Prefect at import time: ``classify`` first launches Prefect's API server
process and starts loading the model on a thread, then imports Prefect and runs the flow, so
the three start-up costs overlap instead of adding up.
"""

from __future__ import annotations

import errno
import logging
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.common import (
    DataOpt,
    JsonOpt,
    emit,
    fail,
    local_path,
    location,
    progress_enabled,
    registry_location,
    setup,
)

InputOpt = Annotated[str | None, typer.Option(
    "--input", help="Input folder (or s3:// URL) of .npy batches [default: DATA/incoming].",
    show_default=False, parser=location)]
OutputOpt = Annotated[str | None, typer.Option(
    "--output", help="Output folder: Parquet datasets and the ledger [default: DATA/output].",
    show_default=False, parser=location)]
RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", help="Model registry, a folder or s3://bucket/prefix "
    "[default: DATA/registry].", show_default=False,
    parser=registry_location)]
# The options a classification run shares with `watch` (declared once).
ModelVersionOpt = Annotated[str | None, typer.Option(
    "--model-version", help="Registry version, e.g. v0003 [default: production, resolved "
    "per run].", show_default=False)]
BatchSizeOpt = Annotated[int | None, typer.Option(
    "--batch-size", min=1, help="Frames per model call [default: 256].", show_default=False)]
QuietOpt = Annotated[float | None, typer.Option(
    "--quiet-seconds", min=0, help="A batch without _SUCCESS is complete when nothing in it "
    "changed for this long [default: 5].", show_default=False)]
MoveOpt = Annotated[Path | None, typer.Option(
    "--move-processed", help="Move processed files here (rejected ones under _rejected/); "
    "without it the input is never modified.", show_default=False, parser=local_path)]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", min=1, help="Classify on a local Dask cluster of N worker processes "
    "(127.0.0.1, no dashboard; each loads the model once).", show_default=False)]
EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="Inference engine: auto (ONNX Runtime when the version has a verified "
    "model.onnx, else Keras), keras or onnx [default: auto, POSEBATCH_ENGINE].",
    show_default=False)]
DaskOpt = Annotated[str | None, typer.Option(
    "--dask-address", help="Classify on an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 "
    "(its workers must see the input, e.g. on s3://).", show_default=False)]


def _str(location: str | None, default: Path) -> str:
    """A location option as given (paths or s3:// URLs), else the settings' default."""
    return str(default) if location is None else location


def run_classify(params: dict[str, Any], registry: str, version: str, batch_size: int,
                  as_json: bool, spec: Any = None) -> dict[str, Any]:
    import os

    from flows.runtime.ephemeral import start_early_server
    from flows.settings import get_settings

    bar = progress_enabled() and not as_json
    if bar:  # logs still reach the Prefect API; the terminal shows the progress bar
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    settings = get_settings(params.get("data_root"))
    idle = _idle(params, version, settings)
    if idle.summary is not None:  # nothing to do: no Prefect, no TensorFlow
        return idle.summary
    server = start_early_server(settings.early_server)  # before any thread; stopped at exit
    on_dask = spec is not None and spec.kind != "threads"
    # On Dask the workers load the model (flows/runners); here only when files are to be
    # classified (moving known files or compacting needs no model).
    if not on_dask and idle.needs_model:
        engine = params.get("engine") or settings.engine
        threading.Thread(target=_preload, args=(registry, version, batch_size, settings.xla,
                                                engine),
                         name="posebatch-model-load", daemon=True).start()
    from flows.classify import classify_flow
    from flows.runtime.progress import add_file_listener
    from flows.runtime.runners import with_task_runner

    _console_without_tracebacks()

    if on_dask:
        typer.echo(f"classifying on a {spec.describe()}", err=True)
    flow = with_task_runner(classify_flow, spec)
    if server is not None:
        server.wait()
    if not bar:
        return flow(**params)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), transient=True) as prog:
        job = prog.add_task("classifying files", total=None)
        remove = add_file_listener(
            lambda done, total: prog.update(job, completed=done, total=total))
        try:
            return flow(**params)
        finally:
            remove()


def _idle(params: dict[str, Any], version: str, settings: Any) -> Any:
    """The run's one discovery before any start-up cost (``tasks.classify.idle.IdleCheck``):
    nothing to do, or whether the flow will need the model."""
    from tasks.classify.discover import excluded_folders
    from tasks.classify.idle import idle_run
    from tasks.io.storage import absolute

    inp = absolute(params.get("input_dir") or settings.incoming_dir)
    out = absolute(params.get("output_dir") or settings.output_dir)
    move = absolute(params["move_processed"]) if params.get("move_processed") else None
    quiet = params.get("quiet_seconds")
    return idle_run(inp, out, quiet_seconds=settings.quiet_seconds if quiet is None
                    else float(quiet), exclude=excluded_folders(inp, out, move),
                    move_processed=move, fold_at=settings.fold_at,
                    compact_above=settings.compact_above, model_version=version,
                    lease_seconds=settings.lease_seconds)


class _NoTraceback(logging.Formatter):
    """A console formatter that drops the traceback: a failed task's log line stays one line
    on the terminal (the CLI then prints the cause as ``error: ...``); the Prefect API's log
    handler formats the same record with its traceback, so the run's logs keep it."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _console_without_tracebacks() -> None:
    """Set Prefect's logging up now and strip tracebacks from its console handlers: a disk
    full during a commit (or any failure) ends in one ``error:`` line, not a wall."""
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()
    loggers = [logging.root, *(lg for lg in logging.root.manager.loggerDict.values()
                               if isinstance(lg, logging.Logger))]
    for lg in loggers:
        for handler in lg.handlers:
            if isinstance(handler, PrefectConsoleHandler) and \
                    not isinstance(handler.formatter, _NoTraceback):
                handler.setFormatter(_NoTraceback(handler.formatter or logging.Formatter()))


def _preload(registry: str, version: str, batch_size: int, xla: bool = False,
             engine: str = "auto") -> None:
    """Load the model on its engine (ONNX Runtime, or TensorFlow and a compiled Keras model)
    while Prefect starts (only when the idle check found files to classify). Errors resurface
    later, when the flow loads the model itself."""
    try:
        from tasks.classify.infer import load_predictor

        load_predictor(registry, version, batch_size, xla, engine)
    except Exception:  # noqa: BLE001 - reported by the flow's own load
        pass


def register(app: typer.Typer) -> None:
    """Add ``classify`` and ``compact``."""
    app.command("classify")(classify)
    app.command("compact")(compact_cmd)


def classify(
    input_dir: InputOpt = None,
    output_dir: OutputOpt = None,
    registry_dir: RegistryOpt = None,
    batch_size: BatchSizeOpt = None,
    model_version: ModelVersionOpt = None,
    max_files: Annotated[int | None, typer.Option(
        "--max-files", min=1, help="Classify at most N new files this run (the oldest "
        "batches first; the rest is the summary's backlog).", show_default=False)] = None,
    max_bytes: Annotated[int | None, typer.Option(
        "--max-bytes", min=1, help="Classify at most this many bytes of new input this run "
        "(the oldest batches first; at least one file).", show_default=False)] = None,
    move_processed: MoveOpt = None,
    quiet_seconds: QuietOpt = None,
    chunk_files: Annotated[int | None, typer.Option(
        "--chunk-files", min=1, help="Files per classification task [default: 2048, "
        "POSEBATCH_CHUNK_FILES].", show_default=False)] = None,
    workers: WorkersOpt = None,
    dask_address: DaskOpt = None,
    engine: EngineOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify new, complete .npy batches into Parquet predictions (exactly once).

    A batch folder is complete when it holds _SUCCESS or nothing in it changed for
    --quiet-seconds; a file is new when its (path, SHA-256) was never processed. Bad
    files are recorded in OUTPUT/rejections with a reason code. Safe to kill and rerun.
    """
    from flows.runtime.runners import runner_spec

    try:
        spec = runner_spec(workers, dask_address)
    except ValueError as exc:
        fail(str(exc), as_json)
    settings = setup(data, prefect=True)
    inp, out, reg, version = _locations(settings, input_dir, output_dir, registry_dir,
                                        model_version, move_processed, as_json, engine)
    bsz = batch_size or settings.batch_size
    params = {"input_dir": inp, "output_dir": out, "registry_dir": reg,
              "model_version": version, "batch_size": bsz, "max_files": max_files,
              "max_bytes": max_bytes,
              "move_processed": str(move_processed) if move_processed else None,
              "quiet_seconds": quiet_seconds, "chunk_files": chunk_files,
              "data_root": str(settings.data_root), "engine": engine}
    summary = _run_or_fail(params, reg, version, bsz, as_json, spec)
    from tasks.classify.run_summary import format_summary

    # Whether this process imported TensorFlow (a run that finds nothing new should not).
    summary = {**summary, "tensorflow_imported": "tensorflow" in sys.modules}
    emit(summary, as_json, format_summary(summary))


def _locations(settings: Any, input_dir: str | None, output_dir: str | None,
               registry_dir: str | None, model_version: str | None,
               move_processed: Path | None, as_json: bool, engine: str | None = None
               ) -> tuple[str, str, str, str]:
    """(input, output, registry, model version), checked before any start-up cost: a missing
    folder, an unknown version or a held output lock fails in milliseconds, not after Prefect."""
    from models.registry import Registry, RegistryError
    from tasks.classify.ledger import LockHeld, OutputLock
    from tasks.io.storage import Location

    inp = _str(input_dir, settings.incoming_dir)
    out = _str(output_dir, settings.output_dir)
    reg = _str(registry_dir, settings.registry_dir)
    if not Location(inp).is_remote and not Path(inp).is_dir():
        fail(f"input folder {inp} does not exist", as_json)
    if move_processed and Location(inp).is_remote:
        fail("--move-processed works on local input folders only", as_json)
    from tasks.classify.engine import EngineError, choose_engine

    try:
        entry = Registry(reg).resolve(model_version)
        choose_engine(entry, engine or settings.engine)  # --engine onnx on a version without one
        OutputLock(out, settings.lease_seconds).probe()  # fail fast, before any start-up
    except (RegistryError, LockHeld, EngineError) as exc:
        fail(str(exc), as_json, code=3 if isinstance(exc, LockHeld) else 2)
    return inp, out, reg, entry.version


def _run_or_fail(params: dict[str, Any], reg: str, version: str, bsz: int, as_json: bool,
                 spec: Any) -> dict[str, Any]:
    """Run the flow; a lock taken meanwhile exits 3, any other known failure one line, 2."""
    from models.registry import RegistryError
    from tasks.classify.ledger import LockHeld

    try:
        return run_classify(params, reg, version, bsz, as_json, spec)
    except LockHeld as exc:
        fail(str(exc), as_json, code=3)
    except OSError as exc:  # e.g. a full disk during a commit: nothing half-done is kept
        full = exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        fail(f"classification failed: {'no room to write' if full else 'I/O error on'} "
             f"{params['output_dir']} ({exc}); nothing half-written was committed, run again "
             "once fixed", as_json)
    except (RegistryError, ValueError, RuntimeError) as exc:
        fail(f"classification failed: {exc}", as_json)
    raise AssertionError("unreachable: fail() always exits")


def compact_cmd(
    output_dir: OutputOpt = None,
    min_parts: Annotated[int, typer.Option(
        "--min-parts", min=2, help="Compact a day partition holding at least N parts.")] = 2,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge each day's small Parquet parts into one file and fold the ledger.

    Takes the output's lock, so it never runs beside a classification on the same output.
    """
    from tasks.classify.ledger import Ledger, LockHeld, OutputLock
    from tasks.classify.outputs import compact

    settings = setup(data)
    out = _str(output_dir, settings.output_dir)
    try:
        with OutputLock(out, settings.lease_seconds):
            ledger = Ledger.load(out)
            rec = ledger.reconcile()
            folded = ledger.fold()
            stats = compact(ledger, min_parts=min_parts)
            ledger.fold()
    except LockHeld as exc:
        fail(str(exc), as_json, code=3)
    result = {"ok": True, "output_dir": out, "records_folded": folded, **stats,
              "reconciled": rec}
    emit(result, as_json,
         f"compacted {out}: {stats['partitions']} partition(s), {stats['parts_before']} "
         f"part(s) -> {stats['parts_after']}, {stats['rows']} row(s); "
         f"{folded} ledger record(s) folded")
