"""What every command shares: the ``--data``/``--json`` options, output, and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.settings import Settings, configure_prefect_env, get_settings

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Data root (default ./data, or $POSEBATCH_DATA_ROOT).",
                 show_default=False),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object as the last line of stdout."),
]


def setup(data: Path | None, prefect: bool = False) -> Settings:
    """Settings for a command; ``prefect=True`` also prepares Prefect's environment."""
    settings = get_settings(data)
    from tasks.io import faults

    faults.arm(settings.crash_at)  # the crash tests' hook; disarmed unless they set it
    if prefect:
        configure_prefect_env(settings)
    return settings


def emit(result: dict[str, Any], as_json: bool, human: str | None = None) -> None:
    """Print the human summary, and with ``--json`` the JSON object as the last stdout line."""
    if human and not as_json:
        typer.echo(human)
    if as_json:
        typer.echo(json.dumps(result, default=str, sort_keys=True))


def fail(message: str, as_json: bool = False, code: int = 2) -> None:
    """A one-line error on stderr (and a JSON error object with ``--json``), then exit."""
    lines = str(message).strip().splitlines()
    message = lines[0] if lines else "failed"
    typer.echo(f"error: {message}", err=True)
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": message}))
    raise typer.Exit(code)


def progress_enabled() -> bool:
    """Progress bars only on a terminal; scripts and CI get plain log lines."""
    return sys.stderr.isatty()


def use_server(settings: Settings) -> str | None:
    """The Prefect server a command talks to: ``PREFECT_API_URL``, else the one ``posebatch
    serve`` runs for this data root; exported as ``PREFECT_API_URL`` for Prefect's client.
    None: there is none (the caller decides whether that is an error)."""
    import os

    from flows.runtime.serve import known_api_url

    api = os.environ.get("PREFECT_API_URL") or known_api_url(settings)
    if api:
        os.environ["PREFECT_API_URL"] = api
    return api
