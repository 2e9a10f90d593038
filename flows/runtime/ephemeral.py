"""Start Prefect's temporary API server at the very start of a command, not when a flow runs.

Without ``PREFECT_API_URL``, Prefect starts a temporary server the first time a flow needs
the API: it first imports the whole server application into the calling process (seconds of
CPU), then launches it in a subprocess and waits. A command that launches the same server
process first thing, before importing Prefect or TensorFlow, overlaps that start-up with its
own imports and model loading on the other core, and never imports the server code itself.

The server is the one Prefect runs (``uvicorn prefect.server.api.server:create_app``, UI off,
database under ``PREFECT_HOME``), on a free port of 127.0.0.1. It is stopped when the command
ends, and on Linux it is also told to exit if the command is killed (``PR_SET_PDEATHSIG``).

Nothing happens when ``PREFECT_API_URL`` is set (a real server) or the settings turn it off
(``POSEBATCH_EARLY_SERVER=0``: Prefect's own behaviour). Standard library only: importing
this module is instant.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from flows.runtime.processes import free_port, stop_process


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EarlyServer:
    """A temporary Prefect API server process this command owns."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log: IO[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def launch(self) -> None:
        spec = importlib.util.find_spec("prefect")
        if spec is None or spec.origin is None:
            raise RuntimeError("prefect is not installed")
        app_dir = str(Path(spec.origin).parent.parent)
        self.port = free_port()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
             str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            preexec_fn=_die_with_parent)  # noqa: PLW1509 - no threads exist yet
        os.environ["PREFECT_API_URL"] = self.api_url

    def wait(self, timeout: float = 90.0) -> None:
        """Block until the API answers; raise ``RuntimeError`` with the log's place if not."""
        deadline = time.monotonic() + timeout
        retried = False
        while time.monotonic() < deadline:
            assert self.proc is not None
            code = self.proc.poll()
            if code == 3 and not retried:  # uvicorn: port taken meanwhile; try another
                retried = True
                self.launch()
                continue
            if code is not None:
                break
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the temporary Prefect server did not start (log: {self.log_path});"
                           " set POSEBATCH_EARLY_SERVER=false or PREFECT_API_URL to avoid it")

    def stop(self) -> None:
        if self.proc is not None:  # it shares our process group: signal it alone
            stop_process(self.proc, grace=10, group=False)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def start_early_server(enabled: bool = True) -> EarlyServer | None:
    """Launch the server now if this command will need one; call before starting threads.

    ``enabled`` is the settings' ``early_server``; a configured ``PREFECT_API_URL`` (Prefect's
    own variable) means a server already runs."""
    if not enabled or os.environ.get("PREFECT_API_URL"):
        return None
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
    server = EarlyServer(home / "posebatch-server.log")
    server.launch()
    # Registered before Prefect is imported, so it runs after Prefect's own exit handlers
    # (atexit is last-in, first-out) have flushed logs and events to this server.
    atexit.register(server.stop)
    return server


def stop_server(server: Any) -> None:
    if server is not None:
        server.stop()
