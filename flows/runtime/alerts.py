"""Alerts as Prefect automations: declared here, created by ``posebatch alerts apply``.

Why automations and not code in the flows: a flow that crashed, or never started, cannot
report itself. The Prefect server watches the events every run emits (and the absence of
them) and notifies through a notification block, whatever happened to the process.

Three automations, each one a name (``apply`` is idempotent by name: it creates what is
missing, updates what differs and leaves the rest alone):

- ``posebatch-flow-failed``: a ``classify`` or ``retrain`` flow run enters Failed or Crashed;
- ``posebatch-classify-absent``: no ``classify`` flow run Completed within
  ``alert_absence_hours`` (a proactive trigger: the server notices the silence);
- ``posebatch-monitor-alert``: the event ``posebatch.monitor.alert`` (``MONITOR_EVENT``), one
  per threshold a run's monitoring row crosses (``emit_monitor_alerts``), payload
  ``metric``, ``value``, ``threshold``, ``reason``.

They notify through one block: a ``CustomWebhookNotificationBlock`` that ``apply`` writes
from ``alert_webhook_url`` (JSON ``{"subject", "body", "source"}``), or an existing block
named by ``alert_block`` (Slack, e-mail through SendGrid, anything Prefect notifies with).

``plan_alerts`` is pure (plain dicts, no Prefect import): tests read the declarations
without a server.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flows.runtime.events import MONITOR_ALERT as MONITOR_EVENT
from flows.runtime.events import MONITOR_RESOURCE
from flows.settings import Settings

WATCHED_FLOWS = ("classify", "retrain")
TAG = "posebatch"
MIN_PROACTIVE = timedelta(seconds=10)        # Prefect's server refuses a shorter `within`
WEBHOOK_JSON = {"subject": "{{subject}}", "body": "{{body}}", "source": "{{name}}"}

FAILED = "posebatch-flow-failed"
ABSENT = "posebatch-classify-absent"
MONITOR = "posebatch-monitor-alert"


def absence_window(hours: float) -> timedelta:
    """The proactive window; ``ValueError`` (one line) below the server's minimum."""
    window = timedelta(hours=hours)
    if window < MIN_PROACTIVE:
        raise ValueError(f"alert_absence_hours {hours:g} is below Prefect's minimum "
                         f"window of {MIN_PROACTIVE.total_seconds():g} s")
    return window


def plan_alerts(settings: Settings) -> list[dict[str, Any]]:
    """The declared automations as plain dicts: ``name``, ``description``, ``trigger``
    (an ``EventTrigger``'s fields) and the notification's ``subject`` and ``body`` (Jinja,
    rendered by the server with ``event``, ``flow``, ``flow_run`` in scope)."""
    window = absence_window(settings.alert_absence_hours)
    flow_of = {"prefect.resource.role": "flow"}
    return [
        {"name": FAILED,
         "description": "A classify or retrain flow run entered Failed or Crashed.",
         "trigger": {"expect": ["prefect.flow-run.Failed", "prefect.flow-run.Crashed"],
                     "match": {"prefect.resource.id": "prefect.flow-run.*"},
                     "match_related": {**flow_of, "prefect.resource.name": list(WATCHED_FLOWS)},
                     "posture": "Reactive", "threshold": 1, "within": timedelta(0)},
         "subject": "posebatch: {{ flow.name }} run {{ flow_run.name }} "
                    "{{ flow_run.state.name }}",
         "body": "Flow run {{ flow_run.name }} ({{ flow_run.id }}) of flow {{ flow.name }} "
                 "entered {{ flow_run.state.name }}: {{ flow_run.state.message }}"},
        {"name": ABSENT,
         "description": f"No classify flow run Completed within {_hours(window)}.",
         "trigger": {"expect": ["prefect.flow-run.Completed"],
                     "match": {"prefect.resource.id": "prefect.flow-run.*"},
                     "match_related": {**flow_of, "prefect.resource.name": "classify"},
                     "posture": "Proactive", "threshold": 1, "within": window},
         "subject": "posebatch: no completed classify run in " + _hours(window),
         "body": f"No classify flow run has Completed within {_hours(window)} "
                 "(alert_absence_hours). Is the worker or `posebatch serve` running?"},
        {"name": MONITOR,
         "description": "A classification run crossed a monitoring threshold.",
         "trigger": {"expect": [MONITOR_EVENT],
                     "match": {"prefect.resource.id": f"{MONITOR_RESOURCE}.*"},
                     "posture": "Reactive", "threshold": 1, "within": timedelta(0)},
         "subject": "posebatch: monitoring alert {{ event.payload.metric }}",
         "body": "{{ event.payload.reason }} (metric {{ event.payload.metric }}, value "
                 "{{ event.payload.value }}, threshold {{ event.payload.threshold }}, "
                 "model {{ event.payload.model_version }}, {{ event.resource.id }})"},
    ]


def _hours(window: timedelta) -> str:
    seconds = window.total_seconds()
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"


def automation_cores(plans: list[dict[str, Any]], block_document_id: Any) -> list[Any]:
    """Prefect ``AutomationCore`` objects for the plans, notifying through the block."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger

    return [AutomationCore(
        name=p["name"], description=p["description"], enabled=True, tags=[TAG],
        trigger=EventTrigger(**p["trigger"]),
        actions=[SendNotification(block_document_id=block_document_id,
                                  subject=p["subject"], body=p["body"])],
    ) for p in plans]


def _comparable(automation: Any) -> dict[str, Any]:
    """What ``apply`` compares: everything but ids (the trigger's id is random), with lists of
    names sorted: a trigger's ``expect`` is a set, and a set of the same names can dump in
    another order, which read as "changed" about once in five runs."""
    data = automation.model_dump(mode="json", include={"name", "description", "enabled",
                                                       "tags", "trigger", "actions"})
    data["trigger"].pop("id", None)
    return _sorted_lists(data)


def _sorted_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_sorted_lists(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


# --- against a Prefect server -------------------------------------------------------------

def notification_block(settings: Settings, client: Any) -> dict[str, Any]:
    """The block the automations notify through: ``alert_block`` (an existing one, by
    ``type-slug/name``) or the webhook block written from ``alert_webhook_url``. Returns
    ``{"id", "slug", "action"}``; ``ValueError`` (one line) when neither is configured."""
    if settings.alert_block:
        type_slug, _, name = settings.alert_block.partition("/")
        if not name:
            raise ValueError(f"alert_block {settings.alert_block!r}: use type-slug/name, "
                             "e.g. slack-webhook/ops")
        from prefect.exceptions import ObjectNotFound

        try:
            doc = client.read_block_document_by_name(name=name, block_type_slug=type_slug)
        except ObjectNotFound:
            raise ValueError(f"alert_block {settings.alert_block!r} not found on the "
                             "server (create it in the UI or with Block.save)") from None
        return {"id": doc.id, "slug": settings.alert_block, "action": "existing"}
    if not settings.alert_webhook_url:
        raise ValueError("no alert destination: set POSEBATCH_ALERT_WEBHOOK_URL (or "
                         "POSEBATCH_ALERT_BLOCK naming an existing notification block)")
    return _webhook_block(settings.alert_webhook_url, settings.alert_webhook_block)


def _webhook_block(url: str, name: str) -> dict[str, Any]:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.exceptions import ObjectNotFound

    slug = f"custom-webhook/{name}"
    try:
        old = CustomWebhookNotificationBlock.load(name)
    except (ValueError, ObjectNotFound):  # no such block (or block type) yet
        old = None
    if old is not None and old.url == url and old.json_data == WEBHOOK_JSON:
        return {"id": old._block_document_id, "slug": slug, "action": "unchanged"}
    block = CustomWebhookNotificationBlock(name="posebatch", url=url, json_data=WEBHOOK_JSON)
    block_id = block.save(name, overwrite=True)
    return {"id": block_id, "slug": slug, "action": "created" if old is None else "updated"}


def apply_alerts(settings: Settings) -> dict[str, Any]:
    """Create or update the block and the declared automations, by name: twice is once.
    Returns the block and, per automation, ``created``, ``updated`` or ``unchanged``."""
    from prefect.client.orchestration import get_client

    plans = plan_alerts(settings)
    with get_client(sync_client=True) as client:
        block = notification_block(settings, client)
        result = {}
        for want in automation_cores(plans, block["id"]):
            existing = client.read_automations_by_name(want.name)
            for extra in existing[1:]:       # duplicates someone made by hand: one stays
                client.delete_automation(extra.id)
            if not existing:
                client.create_automation(want)
                result[want.name] = "created"
            elif _comparable(existing[0]) != _comparable(want):
                client.update_automation(existing[0].id, want)
                result[want.name] = "updated"
            else:
                result[want.name] = "unchanged"
    return {"block": {k: str(v) for k, v in block.items()}, "automations": result}


def list_alerts() -> list[dict[str, Any]]:
    """The server's posebatch automations (tag ``posebatch``), oldest first."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        autos = [a for a in client.read_automations() if TAG in (a.tags or [])]
    return [{"name": a.name, "id": str(a.id), "enabled": a.enabled,
             "trigger": _describe(a.trigger), "description": a.description} for a in autos]


def _describe(trigger: Any) -> str:
    expect = ",".join(sorted(trigger.expect or []))
    if str(trigger.posture.value) == "Proactive":
        return f"absent {expect} within {trigger.within.total_seconds():g} s"
    return f"on {expect}"


def remove_alerts() -> list[str]:
    """Delete the declared automations (by name); the block stays (it may be shared)."""
    from prefect.client.orchestration import get_client

    removed = []
    with get_client(sync_client=True) as client:
        for name in (FAILED, ABSENT, MONITOR):
            for auto in client.read_automations_by_name(name):
                client.delete_automation(auto.id)
                removed.append(name)
    return removed
