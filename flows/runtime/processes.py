"""Child processes of a command: a free local port for a server, and stopping a child.

One owner for both, shared by the early temporary server (``ephemeral``) and the served
deployments' server and workers (``serve``). Standard library only, so ``ephemeral`` stays
instant to import.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0, group: bool = True) -> None:
    """Stop a child: SIGTERM, then SIGKILL if it is still running after ``grace`` seconds.

    ``group``: the child was started in its own session (``start_new_session=True``), so the
    signals go to its whole process group and reach what it started itself (a server's
    workers). Without, only the child is signalled: a child sharing our group must never get
    a group signal, which would hit this process too."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
