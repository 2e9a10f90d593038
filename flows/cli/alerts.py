"""Commands: alerts apply, list, remove: the project's Prefect automations on a server.

The declarations and the Prefect calls live in ``flows/runtime/alerts.py``. The server is
``PREFECT_API_URL``, else the one ``posebatch serve`` runs for this data root; without
either there is nothing to apply to (an ephemeral server runs no automations).
"""

from __future__ import annotations

import os
from typing import Any

import typer

from flows.cli.common import DataOpt, JsonOpt, emit, fail, setup, use_server


def _server(data: Any, as_json: bool) -> Any:
    """Settings, with ``PREFECT_API_URL`` pointing at the server to talk to."""
    settings = setup(data, prefect=True)
    if not use_server(settings):
        fail("no Prefect server: set PREFECT_API_URL or run `posebatch serve` for this "
             "data root", as_json)
    return settings


def apply_cmd(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Create or update the alert automations and their notification block (idempotent).

    Notifies through a webhook (POSEBATCH_ALERT_WEBHOOK_URL, JSON subject/body) or an
    existing Prefect notification block (POSEBATCH_ALERT_BLOCK=slack-webhook/ops). Alerts:
    a classify or retrain run Failed or Crashed; no Completed classify run within
    POSEBATCH_ALERT_ABSENCE_HOURS (26); the posebatch.monitor.alert event.
    """
    from flows.runtime.alerts import absence_window

    settings = setup(data)
    if not (settings.alert_webhook_url or settings.alert_block):
        fail("no alert destination: set POSEBATCH_ALERT_WEBHOOK_URL (or POSEBATCH_ALERT_BLOCK "
             "naming an existing notification block)", as_json)
    try:
        absence_window(settings.alert_absence_hours)
    except ValueError as exc:
        fail(str(exc), as_json)
    settings = _server(data, as_json)
    from flows.runtime.alerts import apply_alerts

    try:
        result = apply_alerts(settings)
    except Exception as exc:  # server down, unknown block: one line, not a traceback
        fail(f"could not apply the alerts to {os.environ['PREFECT_API_URL']}: {exc}", as_json)
    result = {"ok": True, "api_url": os.environ["PREFECT_API_URL"], **result}
    lines = [f"block {result['block']['slug']}: {result['block']['action']}"]
    lines += [f"automation {n}: {a}" for n, a in result["automations"].items()]
    emit(result, as_json, "\n".join(lines))


def list_cmd(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """The posebatch automations on the server (tag posebatch), with their triggers."""
    _server(data, as_json)
    from flows.runtime.alerts import list_alerts

    try:
        autos = list_alerts()
    except Exception as exc:  # noqa: BLE001 - one line
        fail(f"could not read the automations: {exc}", as_json)
    human = "\n".join(f"{a['name']:<28} {'on ' if a['enabled'] else 'off'}  {a['trigger']}"
                      for a in autos) or "no posebatch automations (run `posebatch alerts apply`)"
    emit({"ok": True, "api_url": os.environ["PREFECT_API_URL"], "automations": autos},
         as_json, human)


def remove_cmd(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Delete the declared alert automations (the notification block stays)."""
    _server(data, as_json)
    from flows.runtime.alerts import remove_alerts

    try:
        removed = remove_alerts()
    except Exception as exc:  # noqa: BLE001 - one line
        fail(f"could not remove the automations: {exc}", as_json)
    emit({"ok": True, "removed": removed}, as_json,
         f"removed {len(removed)} automation(s): {', '.join(removed) or '-'}")


def register(app: typer.Typer) -> None:
    """Add the ``alerts`` group."""
    alerts = typer.Typer(help="Prefect automations that notify on failed, missing or "
                         "drifting runs.", no_args_is_help=True)
    app.add_typer(alerts, name="alerts")
    alerts.command("apply")(apply_cmd)
    alerts.command("list")(list_cmd)
    alerts.command("remove")(remove_cmd)
