"""Start Prefect's temporary API server at the very start of a command, not when a flow runs.

Without ``PREFECT_API_URL``, Prefect starts a temporary server the first time a flow needs
the API: it first imports the whole server application into the calling process (seconds of
CPU), then launches it in a subprocess and waits. A command that launches the same server
process first thing, before importing Prefect or TensorFlow, overlaps that start-up with its
own imports and model loading on the other core, and never imports the server code itself.

The server is the one Prefect runs (``uvicorn prefect.server.api.server:create_app``, UI off,
database under ``PREFECT_HOME``), on a free port of 127.0.0.1, and the command's only server:

* it runs in a session of its own, so a Ctrl-C (SIGINT to the terminal's process group) or a
  group SIGTERM reaches the command, not the server: the command finishes its run and flushes
  its last logs to a live server, then stops it (at exit);
* it dies with the command (``processes.guarded``: ``PR_SET_PDEATHSIG``), so a killed
  command leaves no server behind;
* one database, one server (``claim``): a long-lived command (``watch``) claims the Prefect
  home; it uses the server of a ``posebatch serve`` on the same home and refuses, naming the
  PID, when another ``watch`` holds it. A short command (``classify``, ``rescore``, ``demo``)
  uses whichever posebatch server holds the home instead of starting its own.

Nothing happens when ``PREFECT_API_URL`` is set (a real server) or the settings turn it off
(``POSEBATCH_EARLY_SERVER=0``: Prefect's own behaviour, without these guarantees). Standard
library only: importing this module is instant.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from flows.runtime.claim import Busy, Claim, claim, holder
from flows.runtime.processes import free_port, guarded, stop_process


def export_api_url(api_url: str) -> None:
    """Make ``api_url`` the Prefect API of this process and of every process it starts.

    Prefect reads its settings once, when ``prefect.context`` is first imported: a URL
    exported later would be ignored by this process, which would then start a temporary
    server of its own. So the global settings are re-read if Prefect is already loaded."""
    os.environ["PREFECT_API_URL"] = api_url
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def answers(api_url: str, timeout: float = 2.0) -> bool:
    """Whether the Prefect API at ``api_url`` answers its health check."""
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    return False


class EarlyServer:
    """A temporary Prefect API server process this command owns."""

    def __init__(self, log_path: Path, held: Claim | None = None):
        self.log_path = log_path
        self.claim = held
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
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            guarded([sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory",
                     "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
                     str(self.port), "--log-level", "error", "--lifespan", "on"]),
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True, pass_fds=(self.claim.fd,) if self.claim else ())
        if self.claim is not None:
            self.claim.record(self.proc.pid, self.api_url)
        export_api_url(self.api_url)

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
            if answers(self.api_url):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the temporary Prefect server did not start (log: {self.log_path});"
                           " set POSEBATCH_EARLY_SERVER=false or PREFECT_API_URL to avoid it")

    def stop(self) -> None:
        if self.proc is not None:  # its own session: its group is the server alone
            stop_process(self.proc, grace=10, group=True)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.claim is not None:
            self.claim.release()
            self.claim = None


def start_early_server(enabled: bool = True, command: str | None = None
                       ) -> EarlyServer | None:
    """Launch the server now if this command will need one; call before starting threads,
    from the main thread (the server dies with the thread that started it).

    ``enabled`` is the settings' ``early_server``; a configured ``PREFECT_API_URL`` (Prefect's
    own variable) means a server already runs. ``command`` names a long-lived command that
    claims the Prefect home (``watch``); None for a short one. Raises ``claim.Busy`` (one
    line naming the PID) when the home's database is served by a server it must not share."""
    if not enabled or os.environ.get("PREFECT_API_URL"):
        return None
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
    if _use_shared(home, command):
        return None
    held = claim(home, command, _hint(command)) if command else None
    server = EarlyServer(home / "posebatch-server.log", held)
    server.launch()
    # Registered before Prefect is imported, so it runs after Prefect's own exit handlers
    # (atexit is last-in, first-out) have flushed logs and events to this server.
    atexit.register(server.stop)
    return server


def _use_shared(home: Path, command: str | None) -> bool:
    """Use the server that already holds ``home`` when this command may share it: a short
    command shares any; ``watch`` only that of ``serve`` (which outlives it). A server that
    is still starting gets a minute to answer."""
    owner = holder(home)
    if owner is None:
        return False
    if (command is None or owner.command == "serve") and owner.api_url \
            and _answers_within(owner.api_url, 60.0):
        print(f"using the Prefect server of {owner.describe()} at {owner.api_url}",
              file=sys.stderr)
        export_api_url(owner.api_url)
        return True
    raise Busy(home, owner, _hint(command))


def _answers_within(api_url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not answers(api_url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _hint(command: str | None) -> str:
    return ("stop it first, or use another --data (or PREFECT_API_URL) for this one"
            if command else "wait for it to finish, or set PREFECT_API_URL")


def stop_server(server: Any) -> None:
    if server is not None:
        server.stop()
