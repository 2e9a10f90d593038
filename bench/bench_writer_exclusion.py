"""Benchmark: the two ways to keep one writer on an output, timed on this machine.

    .venv/bin/python bench/bench_writer_exclusion.py [--n 30] [--postgres URL]

- the **lease object** (``tasks/classify/lease.py``): ``acquire`` is a conditional PUT on
  ``_posebatch/lease.json`` (plus starting its renewal thread), ``release`` a conditional
  DELETE, on a moto S3 server on loopback;
- Prefect's **global concurrency limit** with one slot: ``prefect.concurrency.sync.
  concurrency(name, occupy=1, strict=True)``, whose slots are server-side leases; entering
  the context acquires, leaving releases. Against Prefect's test server (SQLite), or the
  server whose database URL ``--postgres`` gives.

Also what a second writer sees while the first holds: the lease refuses at once with the
holder and its expiry; the limit makes the caller wait (``timeout_seconds``) and then says
only that the slot was not free. Prints JSON: median and p90 milliseconds of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median_ms": round(1000 * statistics.median(xs), 2),
            "p90_ms": round(1000 * xs[int(0.9 * (len(xs) - 1))], 2)}


def lease_times(uri: str, n: int) -> dict:
    from tasks.classify.lease import Lease, LeaseHeld
    from tasks.io.storage import Location

    acq, rel = [], []
    for _ in range(n):
        lease = Lease(Location(uri), ttl=60, owner="bench")
        t = time.perf_counter()
        lease.acquire()
        acq.append(time.perf_counter() - t)
        t = time.perf_counter()
        lease.release()
        rel.append(time.perf_counter() - t)
    held = Lease(Location(uri), ttl=60, owner="pid 1 on nightly")
    held.acquire()
    t = time.perf_counter()
    try:
        Lease(Location(uri), ttl=60, owner="laptop").acquire()
        message = "not refused"
    except LeaseHeld as exc:
        message = str(exc)
    refused = time.perf_counter() - t
    held.release()
    return {"acquire": stats(acq), "release": stats(rel),
            "second_writer_ms": round(1000 * refused, 1), "second_writer_sees": message}


def gcl_times(n: int) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency

    name = "bench-output-writer"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    acq, rel = [], []
    for _ in range(n):
        t = time.perf_counter()
        with concurrency(name, occupy=1, strict=True, lease_duration=60):
            acq.append(time.perf_counter() - t)
            t = time.perf_counter()
        rel.append(time.perf_counter() - t)
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with concurrency(name, occupy=1, strict=True, lease_duration=60):
            holding.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(30)
    t = time.perf_counter()
    try:
        with concurrency(name, occupy=1, strict=True, timeout_seconds=2):
            message = "not refused"
    except TimeoutError as exc:
        message = f"{type(exc).__name__}: {exc}"
    refused = time.perf_counter() - t
    done.set()
    holder.join()
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(name)
    return {"acquire": stats(acq), "release": stats(rel),
            "second_writer_ms": round(1000 * refused, 1), "second_writer_sees": message}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--postgres", help="PREFECT_API_DATABASE_CONNECTION_URL for the server")
    args = ap.parse_args()

    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3").create_bucket(Bucket="bench")
    out = {"n": args.n, "lease_object_on_moto_s3": lease_times("s3://bench/out", args.n)}
    server.stop()
    if args.postgres:
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = args.postgres
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        key = "prefect_gcl_" + ("postgres" if args.postgres else "sqlite")
        out[key] = gcl_times(args.n)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
