"""The writer lease of an ``s3://`` output: one writer at a time on every machine.

A local output is guarded by ``flock`` (``ledger.OutputLock``), which the kernel drops when
the holder dies. Object storage has no lock, so an ``s3://`` output gets a lease object,
``OUTPUT/_posebatch/lease.json``: ``{"owner", "token", "expires_at"}``.

- **Taken** by creating the object with ``If-None-Match: *``: of two writers, one wins.
- **Renewed** every third of its time to live (``DEFAULT_TTL``) by a thread of the holder,
  each renewal a PUT with ``If-Match`` on the ETag the holder last wrote.
- **Taken over** only after ``expires_at`` has passed (the holder died or stalled), again
  with ``If-Match`` on the ETag read, so two writers never both take over.
- **Fencing.** Right before a commit record is written, the holder proves the lease still
  its own (``fence``): by renewing once more, unless its last renewal began less than half
  the time to live ago (by both its monotonic and its wall clock), in which case nobody can
  have taken it over yet. A lease that was taken over fails that conditional PUT, and the
  commit is refused with ``LeaseHeld``, naming the new holder and when its lease ends.
  Every commit record carries the token it was written under. Skipping the PUT while the
  lease is fresh takes a request off each commit's critical path (most commits, with the
  renewal thread every third of the time to live).

What it gives up: expiry is judged by the wall clocks of the machines (keep them in NTP
sync; skew eats into the time to live, and a skew beyond half of it would let a fresh-lease
fence pass after a takeover), and a holder that stalls for longer than the time to
live exactly between its fence and the PUT of its record is not stopped (the window is one
PUT; the record still names the token it was written under). Prefect's global concurrency
limits would give the same exclusion with server-side leases, but need a Prefect server;
this works wherever the output does.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from tasks.io.storage import Location

LEASE_FILE = "_posebatch/lease.json"
DEFAULT_TTL = 60.0                     # seconds; POSEBATCH_LEASE_SECONDS via the flows
CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


class LeaseHeld(Exception):
    """Another writer holds the output's lease (the message names it and its expiry)."""


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class Lease:
    """The lease on one ``s3://`` output, held by this process while a run writes."""

    def __init__(self, loc: Location, ttl: float = DEFAULT_TTL, owner: str | None = None,
                 client: Any = None):
        if not loc.is_remote:
            raise ValueError(f"{loc.uri}: a lease is for object storage; use OutputLock")
        self.loc = loc
        self.ttl = float(ttl)
        self.owner = owner or f"pid {os.getpid()} on {socket.gethostname()}"
        self.bucket, _, prefix = loc.path().partition("/")
        self.key = f"{prefix}/{LEASE_FILE}" if prefix else LEASE_FILE
        self._client = client
        self.token: str | None = None
        self.etag: str | None = None
        self.lost: str | None = None   # why the lease was lost (a renewal failed)
        self.renewed: tuple[float, float] = (0.0, 0.0)   # monotonic, wall: last renewal began
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    # -- object primitives ---------------------------------------------------------------

    def _put(self, body: dict[str, Any], **condition: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key,
                                          Body=json.dumps(body).encode(), **condition)["ETag"]
        except ClientError as exc:
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            if exc.response.get("Error", {}).get("Code") in CONFLICT or status in CONFLICT:
                return None
            raise

    def read(self) -> tuple[dict[str, Any], str] | None:
        """The lease object as it is now and its ETag; None when nobody holds it."""
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(obj["Body"].read()), obj["ETag"]

    def _body(self) -> dict[str, Any]:
        now = time.time()
        return {"owner": self.owner, "token": self.token, "acquired_at": _when(now),
                "expires_at": now + self.ttl, "expires": _when(now + self.ttl)}

    # -- the lease -----------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lease (create it, or take over an expired one); ``LeaseHeld`` if another
        writer holds it, naming that writer and when its lease ends."""
        self.token = uuid.uuid4().hex
        began = (time.monotonic(), time.time())
        etag = self._put(self._body(), IfNoneMatch="*")
        if etag is None:
            current = self.read()
            if current is not None and current[0].get("expires_at", 0) > time.time():
                raise LeaseHeld(self.held_message(current[0]))
            cond = {"IfMatch": current[1]} if current else {"IfNoneMatch": "*"}
            began = (time.monotonic(), time.time())
            etag = self._put(self._body(), **cond)   # the expired lease, taken over once
            if etag is None:
                now = self.read()
                raise LeaseHeld(self.held_message(now[0] if now else {}))
        self.etag, self.lost, self.renewed = etag, None, began
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                        name="posebatch-lease")
        self._thread.start()

    def held_message(self, body: dict[str, Any]) -> str:
        left = max(0.0, float(body.get("expires_at", 0)) - time.time())
        return (f"another posebatch run is writing to {self.loc.uri_of()}: lease held by "
                f"{body.get('owner', 'an unknown writer')} until "
                f"{body.get('expires', '?')} ({left:.0f} s left unless renewed)")

    def renew(self) -> None:
        """Extend the lease (If-Match on our last ETag); ``LeaseHeld`` when it was lost."""
        with self._mutex:
            if self.lost is None:
                began = (time.monotonic(), time.time())
                etag = self._put(self._body(), IfMatch=self.etag or "")
                if etag is None:
                    now = self.read()
                    self.lost = self.held_message(now[0] if now else {})
                else:
                    self.etag, self.renewed = etag, began
            if self.lost is not None:
                raise LeaseHeld(f"lease lost, commit refused: {self.lost}")

    def fence(self) -> str:
        """Prove the lease is still ours right before a commit point; its token. Free while
        the last renewal began less than half the time to live ago (module docstring)."""
        age = max(time.monotonic() - self.renewed[0], time.time() - self.renewed[1])
        if self.lost is not None or age >= self.ttl / 2:
            self.renew()
        assert self.token is not None
        return self.token

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with contextlib.suppress(LeaseHeld):  # remembered in self.lost; fence raises
                self.renew()
            if self.lost is not None:
                return

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours (If-Match)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.lost is None and self.etag:
            with contextlib.suppress(Exception):  # expired meanwhile: the taker owns it now
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        self.etag = None


_HELD: dict[str, Lease] = {}   # output URI -> the lease this process holds on it


def held(loc: Location) -> Lease | None:
    """The lease this process holds on ``loc`` (commits fence with it), if any."""
    return _HELD.get(loc.uri_of())


def register(lease: Lease) -> None:
    _HELD[lease.loc.uri_of()] = lease


def unregister(lease: Lease) -> None:
    if _HELD.get(lease.loc.uri_of()) is lease:
        del _HELD[lease.loc.uri_of()]
