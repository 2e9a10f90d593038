"""What every command shares: the ``--data``/``--json`` options, output, and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer

from flows.settings import Settings, configure_prefect_env, get_settings


def refuse(message: str) -> None:
    """Refuse an option's value while it is parsed: one ``error:`` line, exit code 2.

    Raised before the command runs, so nothing is created and nothing is reinterpreted
    (``Path("s3://b/r")`` would silently become the local folder ``s3:/b/r``)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def url_scheme(value: str) -> str | None:
    """The URL scheme of ``value`` (``s3``, ``gs``, ``http``...), None for a local path.
    A one-letter "scheme" is a Windows drive, not a URL."""
    scheme = urlparse(value).scheme
    return scheme if len(scheme) > 1 else None


def local_path(value: str) -> Path:
    """Parser of every option that takes a local file or folder: any URL is refused."""
    scheme = url_scheme(str(value))
    if scheme:
        refuse(f"{value} is a {scheme}:// URL: only a local folder or file is supported "
               "here")
    return Path(value)


def location(value: str) -> str:
    """Parser of the options that take a local folder or an ``s3://bucket/prefix``
    (input, output, archive): any other URL scheme is refused."""
    scheme = url_scheme(str(value))
    if scheme not in (None, "s3", "file"):
        refuse(f"{value}: {scheme}:// is not supported; use a local path or "
               "s3://bucket/prefix")
    if scheme == "s3" and not urlparse(value).netloc:
        refuse(f"{value}: no bucket; expected s3://bucket/prefix")
    return str(value)


def registry_location(value: str) -> str:
    """Parser of every ``--registry`` option: a local folder or ``s3://bucket/prefix``
    (``models/registry.py`` has a store for each); any other URL is refused."""
    return location(value)


DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Data root (default ./data, or $POSEBATCH_DATA_ROOT).",
                 show_default=False, parser=local_path),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object as the last line of stdout."),
]


def setup(data: Path | None, prefect: bool = False) -> Settings:
    """Settings for a command; ``prefect=True`` also prepares Prefect's environment."""
    from pydantic import ValidationError

    try:
        settings = get_settings(data)
    except ValidationError as exc:  # e.g. POSEBATCH_DATA_ROOT=s3://...: one line, exit 2
        errors = exc.errors()
        fail(f"settings: {errors[0]['msg'] if errors else exc}")
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
