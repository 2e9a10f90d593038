"""posebatch's own Prefect events: one owner for their names, resources and payloads, so the
automations that react to them (``flows/runtime/alerts.py``, ``prefect.yaml``) match.

``emit_event`` sends through the current Prefect client; outside a flow run or without an
API it does nothing (events are best effort: the data they describe is already committed).
"""

from __future__ import annotations

from typing import Any

MONITOR_ALERT = "posebatch.monitor.alert"
MODEL_PROMOTED = "posebatch.model.promoted"


def _emit(event: str, resource: dict[str, str], payload: dict[str, Any]) -> bool:
    from prefect.events import emit_event

    return emit_event(event=event, resource=resource, payload=payload) is not None


def emit_monitor_alerts(alerts: list[dict[str, Any]], output_dir: str, flow_run_id: str | None,
                        model_version: str | None) -> int:
    """One ``posebatch.monitor.alert`` per crossed threshold (payload: metric, value,
    threshold, message, model version, flow run, output). Returns how many were sent."""
    resource = {"prefect.resource.id": f"posebatch.output.{output_dir}",
                "prefect.resource.name": output_dir}
    sent = 0
    for alert in alerts:
        sent += _emit(MONITOR_ALERT, resource, {**alert, "model_version": model_version,
                                                "flow_run_id": flow_run_id,
                                                "output_dir": output_dir})
    return sent


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
