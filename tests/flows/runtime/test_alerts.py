"""Alerts: the declarations (fast) and, for real, a Prefect server of our own, `posebatch
alerts apply` (twice), `posebatch serve` running the nightly deployment into a failure, an
absence window at the server's minimum, a `posebatch.monitor.alert` event, and a local
HTTP receiver on 127.0.0.1 recording every webhook the server's automations POST.
Every process started here is stopped by its process id at the end, even on failure."""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from flows.runtime.alerts import (
    ABSENT,
    FAILED,
    MONITOR,
    absence_window,
    automation_cores,
    plan_alerts,
)
from flows.runtime.events import MONITOR_ALERT as MONITOR_EVENT
from flows.runtime.events import monitor_alert_events
from flows.runtime.processes import stop_process
from flows.runtime.server import start_server
from flows.settings import Settings
from tests.support.ops import Procs, deployment, flow_runs, run, wait_for

PREFECT = [sys.executable, "-m", "prefect"]
POSEBATCH = [sys.executable, "-m", "flows.cli"]
ABSENCE_SECONDS = 12          # Prefect's minimum proactive window is 10 s


def test_plan_declares_three_automations_from_the_settings():
    plans = {p["name"]: p for p in plan_alerts(Settings(alert_absence_hours=2))}
    assert set(plans) == {FAILED, ABSENT, MONITOR}
    assert plans[ABSENT]["trigger"]["within"] == timedelta(hours=2)
    assert plans[ABSENT]["trigger"]["posture"] == "Proactive"
    assert plans[FAILED]["trigger"]["match_related"]["prefect.resource.name"] == \
        ["classify", "retrain"]
    assert plans[MONITOR]["trigger"]["expect"] == [MONITOR_EVENT]
    cores = automation_cores(list(plans.values()), "00000000-0000-0000-0000-000000000001")
    assert [c.trigger.posture.value for c in cores] == ["Reactive", "Proactive", "Reactive"]
    assert Settings().alert_absence_hours == 26
    with pytest.raises(ValueError, match="minimum"):
        absence_window(5 / 3600)


def test_monitor_alert_events_one_per_crossed_threshold():
    row = {"flow_run_id": "r1", "frames": 500, "model_version": "v0002", "input_psi": 0.4,
           "class_mix_psi": 0.01, "confidence_psi": None, "est_accuracy": 0.8}
    events = monitor_alert_events(row, 0.25, 0.85)
    assert [e["payload"]["metric"] for e in events] == ["input_psi", "est_accuracy"]
    first = events[0]
    assert first["event"] == MONITOR_EVENT
    assert first["resource"]["prefect.resource.id"] == "posebatch.monitor.r1"
    assert first["payload"] | {} == {**first["payload"], "value": 0.4, "threshold": 0.25,
                                     "model_version": "v0002", "frames": 500}
    assert monitor_alert_events({**row, "input_psi": 0.1, "est_accuracy": 0.9}, 0.25,
                                0.85) == []


# --- the real thing ------------------------------------------------------------------------

class Receiver:
    """A webhook receiver on 127.0.0.1 recording each POSTed JSON body (in a thread)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                bodies.append(json.loads(data or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def matching(self, text: str) -> list[dict[str, Any]]:
        return [b for b in list(self.bodies) if text in b.get("subject", "")]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def alert_site(tmp_path_factory: pytest.TempPathFactory):
    """A Prefect server, a webhook receiver, and the environment `posebatch` needs for both."""
    tmp = tmp_path_factory.mktemp("alerts")
    receiver = Receiver()
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    server, env = start_server(tmp / "prefect", env=base, log=tmp / "server.log", timeout=240)
    env.update(POSEBATCH_ALERT_WEBHOOK_URL=receiver.url, POSEBATCH_EARLY_SERVER="0",
               POSEBATCH_ALERT_ABSENCE_HOURS=str(ABSENCE_SECONDS / 3600))
    procs = Procs()
    try:
        yield {"tmp": tmp, "env": env, "api": env["PREFECT_API_URL"], "procs": procs,
               "receiver": receiver}
    finally:
        procs.stop_all()
        stop_process(server)
        receiver.close()


def posebatch_json(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    return json.loads(run(POSEBATCH + args + ["--json"], env).stdout.strip().splitlines()[-1])


def server_automations(api: str) -> list[dict[str, Any]]:
    resp = httpx.post(f"{api}/automations/filter", json={}, timeout=10)
    resp.raise_for_status()
    return resp.json()


EMIT = """
import json, sys
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
from flows.runtime.events import monitor_alert_events
row = json.loads(sys.argv[1])
for kwargs in monitor_alert_events(row, 0.25, 0.85):
    emit_event(**kwargs)
EventsWorker.drain_all()
"""


@pytest.mark.slow
def test_failed_run_absence_and_monitor_event_each_notify_once(alert_site):
    env, api, tmp, rec = (alert_site[k] for k in ("env", "api", "tmp", "receiver"))
    data = tmp / "data"
    (data / "incoming").mkdir(parents=True)       # no registry: the classify run will fail
    first = posebatch_json(["alerts", "apply", "--data", str(data)], env)
    assert first["block"]["action"] == "created"
    assert set(first["automations"].values()) == {"created"} and len(first["automations"]) == 3
    second = posebatch_json(["alerts", "apply", "--data", str(data)], env)
    assert second["block"] == {**first["block"], "action": "unchanged"}
    assert second["automations"] == {n: "unchanged" for n in (FAILED, ABSENT, MONITOR)}
    names = sorted(a["name"] for a in server_automations(api))
    assert names == sorted([FAILED, ABSENT, MONITOR])           # nothing twice
    listed = posebatch_json(["alerts", "list", "--data", str(data)], env)["automations"]
    assert {a["name"] for a in listed} == set(names)

    # (c) the event the classify flow emits when a run crosses a threshold
    row = {"flow_run_id": "run-42", "frames": 800, "model_version": "v0007",
           "input_psi": 0.41, "est_accuracy": 0.95}
    run([sys.executable, "-c", EMIT, json.dumps(row)], env, cwd=tmp)

    # (a) a real failing run: `posebatch serve` runs the nightly deployment, no model exists
    alert_site["procs"].start(POSEBATCH + ["serve", "--data", str(data)], env,
                              tmp / "serve.log", cwd=tmp)
    assert wait_for(lambda: _deployed(api), timeout=180, step=2), \
        (tmp / "serve.log").read_text()[-3000:]
    run(PREFECT + ["deployment", "run", "classify/nightly"], env)
    failed = wait_for(lambda: rec.matching("Failed"), timeout=120, step=1)
    assert failed, (rec.bodies, flow_runs(api, "classify"))
    (fr,) = [r for r in flow_runs(api, "classify") if r["state_type"] == "FAILED"]
    assert fr["name"] in failed[0]["subject"]       # the rest: serve's scheduled nightlies
    assert failed[0]["source"] == "posebatch" and fr["id"] in failed[0]["body"]
    assert "entered Failed" in failed[0]["body"] and "registry" in failed[0]["body"].lower()

    # (b) no classify run has Completed since the automations exist
    absent = wait_for(lambda: rec.matching("no completed classify run"), timeout=60)
    assert absent and f"{ABSENCE_SECONDS:g} s" in absent[0]["subject"]

    monitor = rec.matching("monitoring alert")
    assert len(monitor) == 1, rec.bodies                      # one automation, one call
    assert monitor[0]["subject"].endswith("input_psi")
    assert "value 0.41, threshold 0.25" in monitor[0]["body"]
    assert "v0007" in monitor[0]["body"] and "posebatch.monitor.run-42" in monitor[0]["body"]
    assert len(rec.matching("Failed")) == 1

    changed = posebatch_json(["alerts", "apply", "--data", str(data)],
                             {**env, "POSEBATCH_ALERT_ABSENCE_HOURS": "26"})["automations"]
    assert changed == {FAILED: "unchanged", ABSENT: "updated", MONITOR: "unchanged"}, changed
    removed = posebatch_json(["alerts", "remove", "--data", str(data)], env)["removed"]
    assert sorted(removed) == sorted(names)
    left = {a["name"] for a in server_automations(api)}    # serve's deployment trigger stays
    assert left and not left & set(names)


def _deployed(api: str) -> bool:
    try:
        deployment(api, "classify", "nightly")
    except httpx.HTTPStatusError:
        return False
    return True


def test_the_same_automation_compares_equal_whatever_the_order_of_its_sets():
    from flows.runtime.alerts import _comparable

    settings = Settings(alert_webhook_url="http://127.0.0.1:1/hook")
    (want,) = automation_cores(plan_alerts(settings)[:1], uuid.uuid4())
    data = want.model_dump()
    data["trigger"]["expect"] = set(reversed(sorted(data["trigger"]["expect"])))
    related = data["trigger"]["match_related"]
    related["prefect.resource.name"] = list(reversed(related["prefect.resource.name"]))
    again = type(want).model_validate(data)
    assert _comparable(again) == _comparable(want)
