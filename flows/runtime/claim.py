"""One Prefect server per database: a claim on a Prefect home, held while its server runs.

Two servers on one SQLite database both run the scheduler, the triggers and the late-runs
service, and both answer for the same deployments. So a long-lived command that starts a
server (``serve``, ``watch``) first claims the Prefect home that holds the database: an
exclusive ``flock`` on ``HOME/server.lock``, whose content says who holds it (command, PID,
server PID, API URL).

The lock's file descriptor is also handed to the server process, so the claim lasts as long
as *either* the command or its server lives: a server that outlived its command (it should
not: see ``processes.guarded``) still blocks a second one, and the refusal names its PID.
The kernel drops the lock when the last holder exits: no stale lock after a crash, and no
guessing from process ids that may have been reused.

Standard library only (``ephemeral`` imports it before anything heavy).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_FILE = "server.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a claim (as it recorded itself)."""

    command: str
    pid: int
    server_pid: int | None = None
    api_url: str | None = None

    def describe(self) -> str:
        """``posebatch serve (PID 12, server PID 13)``, or the server alone once its command
        is gone."""
        if not _alive(self.pid) and self.server_pid and _alive(self.server_pid):
            return (f"a Prefect server (PID {self.server_pid}) left by posebatch "
                    f"{self.command} (PID {self.pid}, no longer running)")
        server = f", server PID {self.server_pid}" if self.server_pid else ""
        return f"posebatch {self.command} (PID {self.pid}{server})"


class Busy(RuntimeError):
    """Another process holds the claim; the message is one line naming it."""

    def __init__(self, home: Path, holder: Holder, hint: str = "") -> None:
        self.holder = holder
        where = f" at {holder.api_url.removesuffix('/api')}" if holder.api_url else ""
        target = holder.pid if _alive(holder.pid) else holder.server_pid
        hint = hint or f"stop it first (kill {target})"
        super().__init__(f"{holder.describe()} already runs the Prefect server for "
                         f"{home}{where}; {hint}")


class Claim:
    """A held claim. ``fd`` is handed to the server process (``pass_fds``)."""

    def __init__(self, path: Path, fd: int, command: str) -> None:
        self.path, self.fd, self.command = path, fd, command
        self.record()

    def record(self, server_pid: int | None = None, api_url: str | None = None) -> None:
        """Write who holds the claim (re-written once the server's PID and URL are known)."""
        data = json.dumps(asdict(Holder(self.command, os.getpid(), server_pid, api_url)))
        os.pwrite(self.fd, data.encode(), 0)
        os.ftruncate(self.fd, len(data))

    def release(self) -> None:
        """Drop our hold (the server keeps it until it exits, if it still runs)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def claim(home: Path, command: str, hint: str = "") -> Claim:
    """Claim ``home`` for ``command``, or raise ``Busy`` naming the holder."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Busy(home, _read(path), hint) from None
    return Claim(path, fd, command)


def holder(home: Path) -> Holder | None:
    """The live holder of ``home``'s claim, or None when nobody holds it."""
    path = home / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(path)
    finally:
        os.close(fd)  # also releases the probe's lock if it got one
    return None


def _read(path: Path) -> Holder:
    """The holder's record; retried briefly, as it may be in the middle of a rewrite."""
    for _ in range(10):
        with contextlib.suppress(OSError, ValueError, TypeError):
            return Holder(**json.loads(path.read_text(encoding="utf-8")))
        time.sleep(0.05)
    return Holder(command="(unknown command)", pid=0)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
