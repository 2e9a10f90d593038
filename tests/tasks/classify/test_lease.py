"""The writer lease of an ``s3://`` output (tasks/classify/lease.py) on the session's moto
server: one holder, renewal, takeover only after expiry, fencing of a commit whose lease
was lost, and messages that name the holder and when its lease ends."""

from __future__ import annotations

import time

import pytest

from tasks.classify.lease import Lease, LeaseHeld
from tasks.classify.ledger import COMMITS, CommitRecord, Ledger, LockHeld, OutputLock
from tasks.io.storage import Location


def _record(cid: str) -> CommitRecord:
    return CommitRecord(seq=0, commit_id=cid, entries=[
        {"path": f"{cid}.npy", "sha256": "s" + cid, "size": 1, "mtime_ns": 0,
         "status": "classified", "reason": None, "detail": None, "frames": 1}])


def test_one_holder_and_the_refusal_names_it_and_its_expiry(s3_bucket: str) -> None:
    loc = Location(f"s3://{s3_bucket}/out")
    laptop = Lease(loc, ttl=30, owner="laptop")
    laptop.acquire()
    try:
        with pytest.raises(LeaseHeld, match=r"held by laptop until 20\d\d-.*s left"):
            Lease(loc, ttl=30, owner="nightly").acquire()
        laptop.renew()  # renewing our own lease works (If-Match on our ETag)
    finally:
        laptop.release()
    nightly = Lease(loc, ttl=30, owner="nightly")
    nightly.acquire()  # released: free at once
    nightly.release()


def test_renewal_keeps_the_lease_and_only_an_expired_one_is_taken_over(
        s3_bucket: str) -> None:
    loc = Location(f"s3://{s3_bucket}/out")
    alive = Lease(loc, ttl=1.2, owner="alive")
    alive.acquire()                       # its thread renews every 0.4 s
    time.sleep(2.0)
    with pytest.raises(LeaseHeld, match="held by alive"):
        Lease(loc, ttl=1.2, owner="other").acquire()
    alive.release()

    paused = Lease(loc, ttl=1.0, owner="paused")
    paused.acquire()
    paused._stop.set()                    # the writer stalls: no more renewals
    time.sleep(1.3)
    taker = Lease(loc, ttl=30, owner="taker")
    taker.acquire()                       # expired: taken over (If-Match on its ETag)
    with pytest.raises(LeaseHeld, match="lease lost, commit refused: .*held by taker"):
        paused.fence()
    paused.release()                      # does not delete the taker's lease
    assert taker.read()[0]["owner"] == "taker"
    taker.release()


def test_a_commit_under_a_lost_lease_is_refused_and_records_carry_the_token(
        s3_bucket: str) -> None:
    """A paused writer that wakes after its lease expired cannot commit over the new one."""
    out = f"s3://{s3_bucket}/out"
    first = OutputLock(out, lease_seconds=1.0)
    first.acquire()
    led = Ledger.load(out)
    done = led.commit(_record("a1"))
    assert done.lease == first.lease.token
    first.lease._stop.set()               # stalls
    time.sleep(1.3)
    second = OutputLock(out, lease_seconds=30)
    with second:                          # holds the lease now (in this process too)
        # the stalled writer's own fence fails before its record is written
        with pytest.raises(LeaseHeld, match="lease lost"):
            first.lease.fence()
        names = [f.path for f in Location(out).list_files() if f.path.startswith(COMMITS)]
        assert len(names) == 1
        led2 = Ledger.load(out)
        assert led2.commit(_record("b1")).lease == second.lease.token
    with pytest.raises(LockHeld, match="lease lost, commit refused"):
        from tasks.classify import lease as leases
        leases.register(first.lease)      # the stalled writer still thinks it holds it
        try:
            led.commit(_record("a2"))
        finally:
            leases.unregister(first.lease)
    assert sorted(r.commit_id for r in Ledger.load(out).records) == ["a1", "b1"]


def test_a_fresh_lease_fences_without_a_request_and_an_older_one_renews(
        s3_bucket: str) -> None:
    lease = Lease(Location(f"s3://{s3_bucket}/out"), ttl=30, owner="fresh")
    lease.acquire()
    try:
        etag = lease.etag
        assert lease.fence() == lease.token and lease.etag == etag     # renewed < 15 s ago
        lease.renewed = (time.monotonic(), time.time() - 16)            # wall clock says old
        assert lease.fence() == lease.token and lease.etag != etag      # a conditional PUT
    finally:
        lease.release()
