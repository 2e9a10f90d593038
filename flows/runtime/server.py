"""A local Prefect server (``prefect server start``) for processes that need its services.

Prefect's scheduler and automations are services of a real Prefect server; the ephemeral API
that Prefect starts on demand runs neither. ``serve`` (and the end-to-end tests) start this one
on 127.0.0.1 with its home and database in a given folder and telemetry off.

The process runs in a session of its own: a Ctrl-C or SIGTERM to the caller's process group
does not reach it, so the caller can still pause its deployments before stopping it, by its
process id (``processes.stop_process``). It dies with its caller (``processes.guarded``), and
it can hold the caller's claim on the database (``claim``), so a second server never starts
on the same one while it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from flows.runtime.claim import Claim
from flows.runtime.processes import free_port, guarded, stop_process

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


def launch_server(home: Path, port: int | None = None, log: Path | None = None,
                  env: Mapping[str, str] | None = None, telemetry: bool = False,
                  held: Claim | None = None) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start ``prefect server start`` on 127.0.0.1 without waiting for it (``wait_healthy``).

    Returns the process and the environment its clients need. Call from the main thread (the
    server dies with the thread that started it). ``held``: the caller's claim on ``home``,
    handed to the server so it lasts as long as the server does."""
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    full_env = server_env(home, port, env, telemetry=telemetry)
    log = log or home / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            guarded([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                     "--port", str(port)]),
            env=full_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, pass_fds=(held.fd,) if held else ())
    if held is not None:
        held.record(proc.pid, full_env["PREFECT_API_URL"])
    return proc, full_env


def start_server(home: Path, port: int | None = None, log: Path | None = None,
                 env: Mapping[str, str] | None = None, timeout: float = 120.0,
                 telemetry: bool = False) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``launch_server`` and wait until it answers; the caller stops it with
    ``stop_process`` (by process id), whatever happens."""
    log = log or home / "server.log"
    proc, full_env = launch_server(home, port, log, env, telemetry)
    try:
        wait_healthy(full_env["PREFECT_API_URL"], proc, timeout, log)
    except BaseException:
        stop_process(proc)
        raise
    return proc, full_env


def wait_healthy(api_url: str, proc: subprocess.Popen[bytes] | None = None,
                 timeout: float = 120.0, log: Path | None = None) -> None:
    """Block until ``api_url`` answers its health check; raise ``RuntimeError`` (the server
    exited: the last line of its log first) or ``TimeoutError``."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            last = next((x for x in reversed(tail.splitlines()) if x.strip()), "")
            raise RuntimeError(f"Prefect server exited with {proc.returncode}: {last} "
                               f"(log {log})\n{tail}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {api_url} not healthy after {timeout:.0f} s")
