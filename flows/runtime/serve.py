"""``posebatch serve``: both flows, their schedule and trigger, in one long-lived process.

For users who want no server, pool and worker of their own. The deployments are not declared
a second time here: they are read from ``prefect.yaml`` (names, entry points, parameters,
triggers, concurrency), then adapted to this process: the path parameters point under the
``--data`` root and the nightly schedule comes from the settings (``nightly_cron``,
``timezone``, as a ``Cron`` object so the timezone survives; a bare cron string loses it).

Prefect's scheduler and automations are services of a real Prefect server; the ephemeral API
that Prefect starts on demand runs neither (scheduled runs would never be created). So when
no ``PREFECT_API_URL`` is set, ``serve`` starts ``prefect server start`` on 127.0.0.1 as a
child process (``server``: home and database under the data root, telemetry off, one per
database, dying with serve) and stops it, by its process id, when serving ends (``serving``:
Ctrl-C and SIGTERM, in order and within bounds).

``plan_deployments`` is pure (no Prefect import) and ``build_deployments`` only builds the
objects: tests check the schedules and their timezone without serving forever.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.runtime.claim import Claim, claim
from flows.runtime.ephemeral import answers, export_api_url
from flows.runtime.processes import kill_now, port_in_use, stop_process
from flows.runtime.server import launch_server, wait_healthy
from flows.runtime.serving import Shutdown, pause, say, serve_until_stopped
from flows.settings import Settings

SERVER_STOP = 5.0   # seconds for the server to stop after SIGTERM before it is killed
PROJECT_DIR = Path(__file__).resolve().parents[2]
PROJECT_FILE = PROJECT_DIR / "prefect.yaml"

# Flow parameters that name a place under the data root, and the settings property for each.
DATA_PARAMETERS = {
    "input_dir": "incoming_dir",
    "output_dir": "output_dir",
    "registry_dir": "registry_dir",
    "labeled_dir": "labeled_dir",
}


@dataclass
class DeploymentPlan:
    """One deployment as ``serve`` will register it (plain data)."""

    name: str
    entrypoint: str                      # absolute path: "/.../flows/classify.py:classify_flow"
    parameters: dict[str, Any]
    schedules: list[dict[str, Any]] = field(default_factory=list)   # {"cron", "timezone"}
    triggers: list[dict[str, Any]] = field(default_factory=list)
    concurrency_limit: int | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)


def load_project(path: Path = PROJECT_FILE) -> dict[str, Any]:
    """The parsed ``prefect.yaml``."""
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: posebatch serve runs from a checkout that "
                                "holds prefect.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _data_defaults(settings: Settings) -> dict[str, str]:
    return {param: str(getattr(settings, prop).resolve())
            for param, prop in DATA_PARAMETERS.items()}


def _retarget_template(value: Any, defaults: Mapping[str, str], project_defaults: Mapping[str, Any]
                       ) -> Any:
    """Point a trigger template's relative fallback (``default('data/labeled', true)``) at
    the served data root."""
    if not isinstance(value, str):
        return value
    for param, path in defaults.items():
        old = project_defaults.get(param)
        if isinstance(old, str) and f"'{old}'" in value:
            value = value.replace(f"'{old}'", repr(path))
    return value


def plan_deployments(settings: Settings, project: Mapping[str, Any] | None = None,
                     project_dir: Path = PROJECT_DIR) -> list[DeploymentPlan]:
    """The deployments of ``prefect.yaml``, adapted to ``settings`` (data root, schedule)."""
    project = load_project() if project is None else project
    defaults = _data_defaults(settings)
    plans: list[DeploymentPlan] = []
    for dep in project.get("deployments") or []:
        path, func = dep["entrypoint"].rsplit(":", 1)
        declared = dict(dep.get("parameters") or {})
        params = {k: defaults.get(k, v) for k, v in declared.items()}
        if "batch_size" in params:
            params["batch_size"] = settings.batch_size
        schedules = [{"cron": settings.nightly_cron, "timezone": settings.timezone}
                     for s in dep.get("schedules") or [] if s.get("active", True)]
        triggers = []
        for trig in dep.get("triggers") or []:
            trig = dict(trig)
            trig["parameters"] = {k: _retarget_template(v, defaults, declared)
                                  for k, v in (trig.get("parameters") or {}).items()}
            triggers.append(trig)
        limit = dep.get("concurrency_limit")
        plans.append(DeploymentPlan(
            name=dep["name"],
            entrypoint=f"{(project_dir / path).resolve()}:{func}",
            parameters=params,
            schedules=schedules,
            triggers=triggers,
            concurrency_limit=limit.get("limit") if isinstance(limit, dict) else limit,
            description=dep.get("description"),
            tags=list(dep.get("tags") or []),
        ))
    return plans


def build_deployments(plans: list[DeploymentPlan]) -> list[Any]:
    """Prefect ``RunnerDeployment`` objects for ``serve`` (imports Prefect and the flows)."""
    from prefect.events import DeploymentTriggerTypes
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    out = []
    for plan in plans:
        flow = load_flow_from_entrypoint(plan.entrypoint)
        triggers = [adapter.validate_python({"name": f"{plan.name}__trigger_{i}", **t})
                    for i, t in enumerate(plan.triggers, start=1)]
        out.append(flow.to_deployment(
            name=plan.name,
            parameters=plan.parameters,
            schedules=[Cron(s["cron"], timezone=s["timezone"]) for s in plan.schedules],
            triggers=triggers or None,
            concurrency_limit=plan.concurrency_limit,
            description=plan.description,
            tags=plan.tags,
        ))
    return out


def check_schedule(cron: str, timezone: str) -> None:
    """Raise ``ValueError`` (one line) for a cron string or timezone Prefect would refuse."""
    check_timezone(timezone)
    check_cron(cron, timezone)


def check_timezone(timezone: str) -> None:
    """The timezone half of ``check_schedule``: standard library only, so it can run before
    anything is started or Prefect imported."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {timezone!r} (use an IANA name such as "
                         "Europe/Berlin or UTC)") from None


def check_cron(cron: str, timezone: str = "UTC") -> None:
    """The cron half of ``check_schedule`` (imports Prefect: its own validation)."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError:
        raise ValueError(f"invalid cron expression {cron!r} (five fields, e.g. "
                         "'0 2 * * *')") from None


SERVE_FILE = "serve.json"


def known_api_url(settings: Settings) -> str | None:
    """The API of a running ``posebatch serve`` for this data root (from its ``serve.json``),
    so ``notify-labeled`` and ``doctor`` find it without PREFECT_API_URL."""
    info = serve_info(settings)
    return info.get("api_url") if info else None


def serve_info(settings: Settings) -> dict[str, Any] | None:
    """What a live ``posebatch serve`` recorded under the data root, or None."""
    import json

    path = settings.prefect_home / SERVE_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)  # still running?
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def _write_serve_info(settings: Settings, api_url: str, server_pid: int | None) -> Path:
    import json
    from datetime import UTC, datetime

    path = settings.prefect_home / SERVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "pid": os.getpid(), "server_pid": server_pid, "api_url": api_url,
        "started_at": datetime.now(UTC).isoformat(), "cron": settings.nightly_cron,
        "timezone": settings.timezone}), encoding="utf-8")
    return path


def serve_forever(settings: Settings, port: int = 4200) -> None:
    """Register every deployment of prefect.yaml and run them until SIGINT/SIGTERM
    (``serving``: the stop order and its bounds).

    Uses ``PREFECT_API_URL`` if set; otherwise claims the data root's Prefect home (one
    server per database: ``claim.Busy`` names the holder) and starts a server under it on
    127.0.0.1:``port``. Prefect is first imported (``check_cron``) once that URL is exported,
    so neither this process nor the flow runs it starts launch a temporary server of their
    own. Raises ``ValueError`` for a bad cron string before any server is started."""
    plans = plan_deployments(settings)
    server: subprocess.Popen[bytes] | None = None
    shutdown = Shutdown(hard_stop=lambda: kill_now(server))
    shutdown.install()
    held: Claim | None = None
    home = settings.prefect_home.resolve()
    try:
        if not os.environ.get("PREFECT_API_URL"):
            held = _claim_port(home, port)
        check_cron(settings.nightly_cron, settings.timezone)
        api = os.environ["PREFECT_API_URL"]
        if held is not None:
            server, _ = launch_server(home, port=port, log=home / "server.log",
                                      telemetry=settings.telemetry, held=held)
            say(f"Prefect server (UI and API) at {api[:-4]} (PID {server.pid}), "
                f"log {home / 'server.log'}")
        info = _write_serve_info(settings, api, server.pid if server else None)
        try:
            deployments = build_deployments(plans)   # imports the flows: overlaps the boot
            if server is not None:
                wait_healthy(api, server, 120.0, home / "server.log")
            elif not answers(api):
                raise RuntimeError(f"the Prefect API at {api} (PREFECT_API_URL) does not "
                                   "answer: is its server running?")
            ids = asyncio.run(serve_until_stopped(deployments, shutdown))
            shutdown.detach()
            say(pause(api, ids))
        finally:
            info.unlink(missing_ok=True)
    finally:
        shutdown.detach()
        if server is not None:
            stop_process(server, grace=SERVER_STOP)
        if held is not None:
            held.release()


def _claim_port(home: Path, port: int) -> Claim:
    """Claim the data root's Prefect home for serve's own server on ``port`` and export
    its URL (before Prefect is imported)."""
    held = claim(home, "serve")
    if port_in_use(port):
        held.release()
        raise RuntimeError(f"port {port} on 127.0.0.1 is in use by another program: "
                           "choose another with --port")
    export_api_url(f"http://127.0.0.1:{port}/api")
    return held
