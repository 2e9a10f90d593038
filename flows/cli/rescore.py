"""Command: ``posebatch rescore``: score classified frames again with another model version.

Nothing heavy at import time; Prefect's server starts first (as ``classify`` does), then
the flow runs in this process.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from flows.cli.classify import EngineOpt, InputOpt, OutputOpt, RegistryOpt, _str
from flows.cli.common import DataOpt, JsonOpt, emit, fail, location, setup


def register(app: typer.Typer) -> None:
    """Add ``rescore``."""
    app.command("rescore")(rescore)


def rescore(
    model: Annotated[str | None, typer.Option(
        "--model", help="Registry version to score with [default: production].",
        show_default=False)] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Files classified on or after this UTC day (YYYY-MM-DD).",
        show_default=False)] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Files classified on or before this UTC day (YYYY-MM-DD).",
        show_default=False)] = None,
    batch: Annotated[str | None, typer.Option(
        "--batch", help="Only this batch (top-level input folder).", show_default=False)] = None,
    path: Annotated[str | None, typer.Option(
        "--path", help="Only files whose path matches this glob ('*' spans folders).",
        show_default=False)] = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", help="Only files with a frame currently of this label (repeatable).",
        show_default=False)] = None,
    max_confidence: Annotated[float | None, typer.Option(
        "--max-confidence", min=0.0, max=1.0, help="Only files with a frame at or below this "
        "confidence.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say how many files and frames would be read, and which cannot be "
        "found; write nothing.")] = False,
    input_dir: InputOpt = None,
    output_dir: OutputOpt = None,
    registry_dir: RegistryOpt = None,
    archive: Annotated[str | None, typer.Option(
        "--archive", help="Where --move-processed moved the inputs [default: the folder the "
        "output remembers from classify].", show_default=False, parser=location)] = None,
    engine: EngineOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score frames already classified again with another model version (new rows next to
    the old ones; exactly once per content, frame and version; safe to kill and rerun).

    Inputs are read again from the input folder or the --move-processed archive; a file
    that is in neither, or whose content changed, is reported and not re-scored.
    """
    settings = setup(data, prefect=True)
    params = _params(settings, model, since, until, batch, path, label, max_confidence,
                     dry_run, input_dir, output_dir, registry_dir, archive, as_json, engine)
    summary = _run(params, as_json)
    emit(dict(summary), as_json, _human(summary))


def _params(settings: Any, model: str | None, since: str | None, until: str | None,
            batch: str | None, path: str | None, label: list[str] | None,
            max_confidence: float | None, dry_run: bool, input_dir: str | None,
            output_dir: str | None, registry_dir: str | None, archive: str | None,
            as_json: bool, engine: str | None = None) -> dict[str, Any]:
    """The flow's parameters, checked before any start-up cost."""
    from datetime import date

    from models.registry import Registry, RegistryError
    from tasks.classify.engine import EngineError, choose_engine
    from tasks.classify.ledger import LockHeld, OutputLock

    for name, day in (("--since", since), ("--until", until)):
        try:
            day and date.fromisoformat(day)
        except ValueError:
            fail(f"{name} must be a day YYYY-MM-DD, got {day!r}", as_json)
    reg, out = _str(registry_dir, settings.registry_dir), _str(output_dir, settings.output_dir)
    try:
        entry = Registry(reg).resolve(model)
        version = entry.version
        choose_engine(entry, engine or settings.engine)
        if not dry_run:
            OutputLock(out, settings.lease_seconds).probe()
    except (RegistryError, LockHeld, EngineError) as exc:
        fail(str(exc), as_json, code=3 if isinstance(exc, LockHeld) else 2)
    return {"model_version": version, "since": since, "until": until, "batch": batch,
            "path": path, "label": label or None, "max_confidence": max_confidence,
            "dry_run": dry_run, "input_dir": _str(input_dir, settings.incoming_dir),
            "output_dir": out, "registry_dir": reg, "archive_dir": archive,
            "data_root": str(settings.data_root), "engine": engine}


def _run(params: dict[str, Any], as_json: bool) -> dict[str, Any]:
    import os

    from flows.runtime.claim import Busy
    from flows.runtime.ephemeral import start_early_server
    from flows.settings import get_settings

    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    try:
        server = start_early_server(get_settings(params["data_root"]).early_server)
    except Busy as exc:  # the data root's server (serve, watch) does not answer
        fail(str(exc), as_json, code=3)
    from flows.rescore import rescore_flow
    from tasks.classify.ledger import LockHeld
    from tasks.read.query import QueryError

    if server is not None:
        server.wait()
    try:
        return rescore_flow(**params)
    except LockHeld as exc:
        fail(str(exc), as_json, code=3)
    except (QueryError, ValueError, RuntimeError, OSError) as exc:
        fail(f"re-scoring failed: {exc}", as_json)
    raise AssertionError("unreachable: fail() always exits")


def _human(s: dict[str, Any]) -> str:
    head = "would re-score" if s["dry_run"] else "re-scored"
    done = s["selected_files"] - s["missing"] if s["dry_run"] else s["rescored_files"]
    lines = [f"{head} {done} file(s) with {s['model_version']} "
             f"({s['selected_frames'] if s['dry_run'] else s['frames']} frame(s)) on the "
             f"{s.get('engine', '?')} engine; "
             f"{s['already_scored']} scored by it before, {s['in_archive']} read from the "
             f"archive"]
    if s["missing"]:
        lines.append(f"{s['missing']} file(s) in neither the input nor the archive, not "
                     f"re-scored: {', '.join(s['missing_files'][:5])}")
    skipped = {k: n for k, n in s["skipped"].items() if n}
    if skipped:
        lines.append("not re-scored: " + ", ".join(f"{n} {k}" for k, n in skipped.items()))
    return "\n".join(lines)
