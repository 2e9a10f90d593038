"""``posebatch serve``: both flows, their schedule and trigger, in one long-lived process.

For users who want no server, pool and worker of their own. The deployments are not declared
a second time here: they are read from ``prefect.yaml`` (names, entry points, parameters,
triggers, concurrency), then adapted to this process: the path parameters point under the
``--data`` root and the nightly schedule comes from the settings (``nightly_cron``,
``timezone``, as a ``Cron`` object so the timezone survives; a bare cron string loses it).

Prefect's scheduler and automations are services of a real Prefect server; the ephemeral API
that Prefect starts on demand runs neither (scheduled runs would never be created). So when
no ``PREFECT_API_URL`` is set, ``serve`` starts ``prefect server start`` on 127.0.0.1 as a
child process (home and database under the data root, telemetry off) and stops it, by its
process id, when serving ends.

``plan_deployments`` is pure (no Prefect import) and ``build_deployments`` only builds the
objects: tests check the schedules and their timezone without serving forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.runtime.processes import free_port, stop_process
from flows.settings import Settings

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
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {timezone!r} (use an IANA name such as "
                         "Europe/Berlin or UTC)") from None
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError:
        raise ValueError(f"invalid cron expression {cron!r} (five fields, e.g. "
                         "'0 2 * * *')") from None


# --- a local Prefect server for processes that need its services -----------------------------

DATABASE_VARS = ("PREFECT_API_DATABASE_", "PREFECT_SERVER_DATABASE_")


def server_env(home: Path, port: int, base: Mapping[str, str] | None = None,
               telemetry: bool = False) -> dict[str, str]:
    """Environment for a Prefect server on 127.0.0.1:``port`` with its home in ``home``, and
    for the clients of that server (workers, ``prefect deploy``, flow runs).

    Other Prefect settings are dropped (another server's URL must not leak in), except the
    database's (``PREFECT_API_DATABASE_*``, ``PREFECT_SERVER_DATABASE_*``): a server told
    to keep its state in PostgreSQL must not fall back to SQLite in its home unnoticed."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("PREFECT_") or k.startswith(DATABASE_VARS)}
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    })
    if not telemetry:
        env["DO_NOT_TRACK"] = "1"
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return env


def start_server(home: Path, port: int | None = None, log: Path | None = None,
                 env: Mapping[str, str] | None = None, timeout: float = 120.0,
                 telemetry: bool = False) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start ``prefect server start`` on 127.0.0.1 and wait until it answers.

    Returns the process (in its own process group) and the environment its clients need.
    The caller stops it with ``stop_process`` (by process id), whatever happens.
    """
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    full_env = server_env(home, port, env, telemetry=telemetry)
    log = log or home / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=full_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        wait_healthy(full_env["PREFECT_API_URL"], proc, timeout, log)
    except BaseException:
        stop_process(proc)
        raise
    return proc, full_env


def wait_healthy(api_url: str, proc: subprocess.Popen[bytes] | None = None,
                 timeout: float = 120.0, log: Path | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"Prefect server exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {api_url} not healthy after {timeout:.0f} s")


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


def serve_forever(settings: Settings, port: int | None = None) -> None:
    """Register every deployment of prefect.yaml and run them until SIGINT/SIGTERM.

    Uses ``PREFECT_API_URL`` if set; otherwise starts a local server under the data root.
    """
    plans = plan_deployments(settings)
    server: subprocess.Popen[bytes] | None = None
    if not os.environ.get("PREFECT_API_URL"):
        home = settings.prefect_home.resolve()
        server, env = start_server(home, port=port or 4200,
                                   log=home / "server.log", telemetry=settings.telemetry)
        os.environ["PREFECT_API_URL"] = env["PREFECT_API_URL"]
        print(f"Prefect server (UI and API) at {env['PREFECT_API_URL'][:-4]}, "
              f"log {home / 'server.log'}", file=sys.stderr)

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    info = _write_serve_info(settings, os.environ["PREFECT_API_URL"],
                             server.pid if server else None)
    try:
        from prefect import serve

        serve(*build_deployments(plans), print_starting_message=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        info.unlink(missing_ok=True)
        if server is not None:
            stop_process(server)
