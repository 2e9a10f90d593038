"""One writer per output: the lock every run that writes to an output holds.

``fcntl.flock`` on ``OUTPUT/_posebatch/lock`` for a local output; the writer lease
(``tasks/classify/lease.py``) for an ``s3://`` one, since object storage has no lock. The
kernel drops a flock when its process dies, even by SIGKILL, so a crashed run never leaves a
stale lock; a dead holder's lease expires after its time to live.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from tasks.classify import lease as leases
from tasks.classify.ledger.records import LOCK_FILE
from tasks.io.storage import Location


class LockHeld(Exception):
    """Another run is writing to the same output (or this one lost its lease)."""


class OutputLock:
    """The output's writer lock (see the module docstring); a context manager."""

    def __init__(self, output: str | Location, lease_seconds: float = leases.DEFAULT_TTL):
        self.loc = output if isinstance(output, Location) else Location(output)
        self.lease = leases.Lease(self.loc, lease_seconds) if self.loc.is_remote else None
        self.path = "" if self.loc.is_remote else self.loc.path(LOCK_FILE)
        self._fh: Any = None

    def acquire(self) -> None:
        if self.lease is not None:
            try:
                self.lease.acquire()
            except leases.LeaseHeld as exc:
                raise LockHeld(str(exc)) from None
            leases.register(self.lease)
            self._fh = self.lease
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise LockHeld(f"another posebatch run is writing to {self.loc.uri_of()} "
                           f"({holder or 'holder unknown'}); wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{datetime.now(UTC).isoformat(timespec='seconds')}")
        fh.flush()
        self._fh = fh

    def acquire_within(self, seconds: float, poll: float = 5.0) -> OutputLock:
        """``acquire``, retried for up to ``seconds`` (a run started by an event waits for
        the nightly run instead of failing); ``LockHeld`` after that."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.acquire()
                return self
            except LockHeld:
                if time.monotonic() + poll > deadline:
                    raise
                time.sleep(poll)

    def release(self) -> None:
        if self.lease is not None and self._fh is not None:
            leases.unregister(self.lease)
            self.lease.release()
            self._fh = None
            return
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.seek(0)
                self._fh.truncate()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> OutputLock:
        if self._fh is None:  # not already taken (``acquire_within``)
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def probe(self) -> None:
        """Raise ``LockHeld`` now if another run holds the lock (take it and let go)."""
        self.acquire()
        self.release()
