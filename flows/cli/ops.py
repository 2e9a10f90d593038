"""Commands: serve, watch, notify-labeled, doctor: running posebatch unattended.

Thin wrappers: the logic lives in ``flows/runtime/serve.py``, ``flows/runtime/watch.py`` and
``flows/runtime/doctor.py``. Nothing heavy (Prefect, TensorFlow) is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.classify import (
    BatchSizeOpt,
    DaskOpt,
    EngineOpt,
    ModelVersionOpt,
    MoveOpt,
    QuietOpt,
    WorkersOpt,
)
from flows.cli.common import (
    DataOpt,
    JsonOpt,
    emit,
    fail,
    local_path,
    location,
    registry_location,
    setup,
    use_server,
)

PortOpt = Annotated[int, typer.Option(
    "--port", help="Port of the local Prefect server `serve` starts on 127.0.0.1 when "
    "PREFECT_API_URL is not set.")]


def serve(
    data: DataOpt = None,
    cron: Annotated[str | None, typer.Option(
        "--cron", help="Nightly classification schedule (default: settings.nightly_cron, "
        "'0 2 * * *').")] = None,
    timezone: Annotated[str | None, typer.Option(
        "--timezone", help="IANA timezone of the schedule (default: settings.timezone, UTC).")
    ] = None,
    port: PortOpt = 4200,
) -> None:
    """Run the nightly classification and the retraining trigger in this process (Ctrl-C stops).

    The deployments come from prefect.yaml; paths point under --data. Uses PREFECT_API_URL
    if set, else starts a Prefect server on 127.0.0.1:PORT with its state under the data root
    (one per data root: a second serve is refused, naming the first one's PID). Ctrl-C or
    SIGTERM stops serve and its server within seconds (a second Ctrl-C at once); if serve is
    killed, its server exits with it.
    """
    settings = setup(data, prefect=True)
    update = {k: v for k, v in (("nightly_cron", cron), ("timezone", timezone)) if v}
    settings = settings.model_copy(update=update)
    from flows.runtime.claim import Busy
    from flows.runtime.serve import check_timezone, serve_forever

    # The cron string is checked inside serve_forever: that check imports Prefect, which
    # must only happen once the server's URL is exported.
    try:
        check_timezone(settings.timezone)
        serve_forever(settings, port=port)
    except (FileNotFoundError, RuntimeError, TimeoutError, ValueError) as exc:
        fail(str(exc).splitlines()[0], code=3 if isinstance(exc, Busy) else 2)
    except KeyboardInterrupt:  # Ctrl-C while starting: everything it started is stopped
        raise typer.Exit(130) from None


def notify_labeled(
    labeled: Annotated[Path | None, typer.Option(
        "--labeled", help="Labeled folder that changed (default: DATA/labeled).",
        show_default=False, parser=local_path)] = None,
    registry: Annotated[str | None, typer.Option(
        "--registry", help="Registry the retraining writes to (default: DATA/registry).",
        show_default=False, parser=registry_location)] = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Emit the `posebatch.labeled.updated` event: the retrain deployment's trigger runs it.

    Needs a Prefect server with the deployments (prefect deploy --all, or posebatch serve):
    PREFECT_API_URL, or the server `posebatch serve` started for this data root.
    """
    settings = setup(data, prefect=True)
    labeled = (labeled or settings.labeled_dir).resolve()
    from tasks.io.storage import absolute

    registry = absolute(registry or settings.registry_dir)
    if not labeled.is_dir():
        fail(f"labeled folder {labeled} does not exist", as_json)
    api = use_server(settings)
    if not api:
        fail("no Prefect server to notify: set PREFECT_API_URL or run `posebatch serve` "
             "for this data root", as_json)
    from flows.runtime.events import emit_labeled_updated

    try:
        result = emit_labeled_updated(labeled, registry)
    except Exception as exc:  # network, server down: one line, not a traceback
        fail(f"could not emit the event to {api}: {exc}".splitlines()[0], as_json)
    result["api_url"] = api
    emit({"ok": True, **result}, as_json,
         f"emitted {result['event']} for {labeled} ({result['files']} labeled files) to {api}")


def watch(
    input_dir: Annotated[str | None, typer.Option(
        "--input", help="Folder (or s3:// URL) to watch (default: DATA/incoming).",
        show_default=False, parser=location)] = None,
    output_dir: Annotated[str | None, typer.Option(
        "--output", help="Output folder (default: DATA/output).", show_default=False,
        parser=location)] = None,
    registry_dir: Annotated[str | None, typer.Option(
        "--registry", help="Model registry (default: DATA/registry).", show_default=False,
        parser=registry_location)
    ] = None,
    model_version: ModelVersionOpt = None,
    batch_size: BatchSizeOpt = None,
    quiet_seconds: QuietOpt = None,
    poll_seconds: Annotated[float, typer.Option(
        "--poll-seconds", min=0.1, help="Look at least this often (the fallback when "
        "notifications are unavailable, and always for s3://).")] = 30.0,
    polling: Annotated[bool, typer.Option(
        "--polling", help="Do not use filesystem notifications; poll only.")] = False,
    move_processed: MoveOpt = None,
    workers: WorkersOpt = None,
    dask_address: DaskOpt = None,
    labeled: Annotated[Path | None, typer.Option(
        "--labeled", help="Also watch this labeled folder and emit posebatch.labeled.updated "
        "when it changed and went quiet (needs a Prefect server).", show_default=False,
        parser=local_path)] = None,
    engine: EngineOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify batches as they become complete (_SUCCESS or quiet), one run at a time.

    Ctrl-C or SIGTERM stops after the current run, a second one at once; nothing is lost (the
    next run reconciles). Uses the server of a `posebatch serve` on the same data root, else
    starts its own (one watch per data root; killed, it leaves no server behind).
    """
    settings = setup(data, prefect=True)
    params, spec = _watch_params(settings, input_dir, output_dir, registry_dir, model_version,
                                 batch_size, quiet_seconds, move_processed, workers,
                                 dask_address, as_json, engine)
    from flows.runtime.claim import Busy
    from flows.runtime.ephemeral import start_early_server

    # Before any thread exists. Not stopped here: it stops at exit, after Prefect has flushed
    # the last run's logs and events to it (stopping it first made Prefect retry against a
    # dead server for over a minute before the process could exit). Its own session keeps a
    # Ctrl-C from reaching it before that; it dies with this process if this one is killed.
    try:
        server = start_early_server(settings.early_server, command="watch")
    except Busy as exc:  # another watch serves this data root's database
        fail(str(exc), as_json, code=3)
    _watch_logger()
    watcher = _watcher(params, spec, poll_seconds, polling, labeled)
    stats = _watch_until_stopped(watcher, server, params["input_dir"], as_json)
    _emit_stats(stats, params, as_json)


def _emit_stats(stats: Any, params: dict[str, Any], as_json: bool) -> None:
    """What the watch did, once it stopped: runs, files, failures and labeled events."""
    result = {"ok": True, "input_dir": params["input_dir"], "output_dir": params["output_dir"],
              "mode": stats.mode, "runs": len(stats.runs), "failed_runs": stats.failed_runs,
              "files": sum(r["files"] for r in stats.runs),
              "labeled_events": stats.labeled_events}
    emit(result, as_json, f"stopped: {result['runs']} run(s), {result['files']} file(s), "
         f"{result['failed_runs']} failed run(s)")


def _watch_params(settings: Any, input_dir: str | None, output_dir: str | None,
                  registry_dir: str | None, model_version: str | None,
                  batch_size: int | None, quiet_seconds: float | None,
                  move_processed: Path | None, workers: int | None,
                  dask_address: str | None, as_json: bool, engine: str | None = None
                  ) -> tuple[dict[str, Any], Any]:
    """(classify params, runner spec), checked before the server starts: a missing input,
    a bad runner or an unknown model version fails at once, not at the first batch."""
    from flows.runtime.runners import runner_spec
    from tasks.io.storage import Location

    inp = input_dir or str(settings.incoming_dir)
    out = output_dir or str(settings.output_dir)
    reg = registry_dir or str(settings.registry_dir)
    if not Location(inp).is_remote and not Path(inp).is_dir():
        fail(f"input folder {inp} does not exist", as_json)
    try:
        spec = runner_spec(workers, dask_address)
    except ValueError as exc:
        fail(str(exc), as_json)
    from models.registry import Registry, RegistryError
    from tasks.classify.engine import EngineError, choose_engine

    try:
        choose_engine(Registry(reg).resolve(model_version), engine or settings.engine)
    except (RegistryError, EngineError) as exc:
        fail(str(exc), as_json)
    quiet = settings.quiet_seconds if quiet_seconds is None else quiet_seconds
    params = {"input_dir": inp, "output_dir": out, "registry_dir": reg,
              "model_version": model_version, "batch_size": batch_size or settings.batch_size,
              "quiet_seconds": quiet, "data_root": str(settings.data_root),
              "move_processed": str(move_processed) if move_processed else None,
              "engine": engine}
    return params, spec


def _watch_logger() -> None:
    """The watcher's log lines on stderr, on its own handler: Prefect reconfigures root."""
    import logging

    wlog = logging.getLogger("posebatch.watch")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    wlog.addHandler(handler)
    wlog.setLevel(logging.INFO)
    wlog.propagate = False


def _watcher(params: dict[str, Any], spec: Any, poll_seconds: float, polling: bool,
             labeled: Path | None) -> Any:
    """The Watcher running one classify flow per ready set; with --labeled it also emits the
    labeled-updated event for the registry this watch classifies with."""
    from flows.runtime.events import emit_labeled_updated
    from flows.runtime.watch import Watcher, classify_runner, ledger_entries
    from tasks.io.storage import absolute

    out = params["output_dir"]
    on_labeled = None
    if labeled is not None:
        lab, regp = labeled.resolve(), absolute(params["registry_dir"])

        def on_labeled() -> object:
            return emit_labeled_updated(lab, regp)

    return Watcher(params["input_dir"], classify_runner(params, spec),
                   quiet_seconds=params["quiet_seconds"], poll_seconds=poll_seconds,
                   known=lambda: ledger_entries(out), force_polling=polling,
                   on_labeled=on_labeled, labeled_dir=labeled)


def _watch_until_stopped(watcher: Any, server: Any, inp: str, as_json: bool) -> Any:
    """Watch until Ctrl-C/SIGTERM: the first signal stops after the current run, a second
    one at once (nothing is lost: the next run reconciles). Returns the watcher's stats."""
    import signal

    seen = {"signals": 0}

    def _stop(signum: int, frame: object) -> None:
        seen["signals"] += 1
        if seen["signals"] > 1:
            raise KeyboardInterrupt  # second Ctrl-C: stop now (the next run reconciles)
        typer.echo("stopping after the current run (again to stop now)", err=True)
        watcher.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        if server is not None:
            server.wait()
        typer.echo(f"watching {inp} (Ctrl-C stops)", err=True)
        return watcher.watch()
    except FileNotFoundError as exc:
        fail(str(exc), as_json)
    except KeyboardInterrupt:
        return watcher.stats
    raise AssertionError("unreachable: fail() always exits")


def doctor(
    input_dir: Annotated[str | None, typer.Option(
        "--input", help="Input folder to check (default: DATA/incoming).", show_default=False,
        parser=location)
    ] = None,
    output_dir: Annotated[str | None, typer.Option(
        "--output", help="Output folder to check (default: DATA/output).", show_default=False,
        parser=location)
    ] = None,
    registry_dir: Annotated[str | None, typer.Option(
        "--registry", help="Registry to check (default: DATA/registry).", show_default=False,
        parser=registry_location)
    ] = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Health check: versions, data root, production model and age, last classification run,
    pending input, disk space, Prefect setup. Exit code 1 when a problem was found."""
    settings = setup(data)  # not prefect=True: that creates the Prefect home; doctor only reads
    from flows.runtime.doctor import diagnose, render

    report = diagnose(settings, input_dir, output_dir, registry_dir)
    emit(report, as_json, render(report))
    if not report["ok"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("serve")(serve)
    app.command("watch")(watch)
    app.command("notify-labeled")(notify_labeled)
    app.command("doctor")(doctor)
