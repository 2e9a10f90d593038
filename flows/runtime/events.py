"""posebatch's own Prefect events: one owner for their names, resources and payloads, so the
automations that react to them (``flows/runtime/alerts.py``, ``prefect.yaml``) match.

``emit_event`` sends through the current Prefect client; outside a flow run or without an
API it does nothing (events are best effort: the data they describe is already committed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

MONITOR_ALERT = "posebatch.monitor.alert"
MONITOR_RESOURCE = "posebatch.monitor"   # resource id prefix: posebatch.monitor.<run id>
MODEL_PROMOTED = "posebatch.model.promoted"
LABELED_EVENT = "posebatch.labeled.updated"  # the retrain deployment's trigger


def monitor_alert_events(row: Mapping[str, Any], psi_threshold: float,
                         min_est_accuracy: float) -> list[dict[str, Any]]:
    """The ``emit_event`` keyword arguments for each threshold ``row`` (a monitoring row,
    ``tasks.monitor.history.monitor_row``) crosses: event ``MONITOR_ALERT``, resource
    ``posebatch.monitor.<flow_run_id>`` (what the alert automation matches), payload
    ``metric``, ``value``, ``threshold``, ``reason``, ``model_version``, ``frames``,
    ``flow_run_id``."""
    from tasks.monitor.drift import alert_items

    run_id = str(row.get("flow_run_id") or "unknown")
    resource = {"prefect.resource.id": f"{MONITOR_RESOURCE}.{run_id}",
                "prefect.resource.name": f"monitoring of run {run_id}"}
    return [{"event": MONITOR_ALERT, "resource": resource,
             "payload": {**item, "model_version": row.get("model_version"),
                         "frames": row.get("frames"), "flow_run_id": run_id}}
            for item in alert_items(row, psi_threshold, min_est_accuracy)]


def emit_monitor_alerts(row: Mapping[str, Any], psi_threshold: float,
                        min_est_accuracy: float) -> list[dict[str, Any]]:
    """Emit ``posebatch.monitor.alert`` once per crossed threshold (inside a flow run,
    Prefect relates each event to the run, its flow and deployment). Returns what was sent."""
    from prefect.events import emit_event

    events = monitor_alert_events(row, psi_threshold, min_est_accuracy)
    for kwargs in events:
        emit_event(**kwargs)
    return events


def emit_model_promoted(registry_dir: str, version: str, previous: str | None,
                        action: str, wait: bool = False) -> str | None:
    """``posebatch.model.promoted`` (payload: version, previous, action, registry_dir): the
    ``rescore/after-promotion`` deployment's trigger. ``wait``: flush before returning (a
    command that exits right after). Returns the event id, None when events are off."""
    from prefect.events import emit_event

    event = emit_event(event=MODEL_PROMOTED,
                       resource={"prefect.resource.id": f"posebatch.registry.{registry_dir}",
                                 "prefect.resource.name": registry_dir},
                       payload={"version": version, "previous": previous, "action": action,
                                "registry_dir": registry_dir})
    if wait and event is not None:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all()
    return str(event.id) if event is not None else None


def emit_labeled_updated(labeled_dir: Path, registry_dir: Path) -> dict[str, Any]:
    """Emit ``posebatch.labeled.updated`` (the retrain deployment's trigger) and wait until it
    is sent. The payload carries the deployment's parameters."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from tasks.io.storage import Location

    files = Location(labeled_dir).list_files(".npy")
    payload = {"labeled_dir": str(labeled_dir), "registry_dir": str(registry_dir),
               "files": len(files)}
    event = emit_event(
        event=LABELED_EVENT,
        resource={"prefect.resource.id": f"posebatch.labeled.{labeled_dir}",
                  "prefect.resource.name": labeled_dir.name},
        payload=payload,
    )
    if event is None:
        raise RuntimeError("Prefect did not emit the event (events are disabled for this "
                           "API configuration)")
    EventsWorker.drain_all()
    return {"event": LABELED_EVENT, "event_id": str(event.id), **payload}
