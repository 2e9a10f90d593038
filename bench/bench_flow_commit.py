"""Benchmark: the flow process's cost per committed file, before and after worker-side writes.

    .venv/bin/python bench/bench_flow_commit.py [--files 2048] [--chunks 8] [--s3]

What the flow process does per chunk on Dask, timed in one process without Prefect or a
model (the model's work is the workers' and does not change):

- before: unpickle the worker's ``ChunkResult`` (every frame's probabilities), judge it,
  build and write the Parquet parts, commit (``commit_chunk``), count (``chunk_stats``);
- after: unpickle the worker's ``StagedChunk`` (no rows), judge, commit the staged parts
  (``commit_staged``), count; the worker's added cost (``stage_chunk``) is timed apart.

Chunks are one frame a file, 17 classes (the deployed model's shape), ``--files`` files
each (the default chunk size). ``--s3`` also runs both against a moto S3 server on
loopback and times one conditional PUT (the lease renewal that fences each commit).
Prints JSON: seconds per committed file for each path, and the projection inputs.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_chunk(files: int, seed: int):
    from models.spec import class_names
    from tasks.classify.infer import ChunkResult, FileOutcome

    rng = np.random.default_rng(seed)
    names = class_names()
    outcomes = [FileOutcome(f"batch_{seed}/f{i:06d}.npy", sha256=f"{seed:04d}{i:060d}",
                            frames=1, warnings=[[]]) for i in range(files)]
    probs = rng.dirichlet(np.ones(len(names)), size=files).astype(np.float32)
    return ChunkResult(outcomes, np.arange(files, dtype=np.int32), np.zeros(files, np.int32),
                       probs, names, "v0001")


def before(out: str, chunks: list, files: int) -> float:
    from tasks.classify.ledger import Ledger, new_commit_id
    from tasks.classify.outputs import commit_chunk, judge_chunk
    from tasks.classify.tally import chunk_stats

    led = Ledger.load(out)
    wires = [pickle.dumps(c) for c in chunks]
    t = time.perf_counter()
    for wire in wires:
        res = pickle.loads(wire)
        judged = judge_chunk(res, led)
        _, tables = commit_chunk(led, judged, {}, new_commit_id(), "run")
        chunk_stats(judged, led, tables.get("predictions"))
    return (time.perf_counter() - t) / (len(chunks) * files)


def after(out: str, chunks: list, files: int) -> tuple[float, float, int, int]:
    from tasks.classify.ledger import Ledger, new_commit_id
    from tasks.classify.staged import commit_staged, stage_chunk
    from tasks.classify.tally import chunk_stats

    t = time.perf_counter()
    staged = [stage_chunk(out, new_commit_id(), c, "run", None, 0.5) for c in chunks]
    worker = (time.perf_counter() - t) / (len(chunks) * files)
    wires = [pickle.dumps(s) for s in staged]
    led = Ledger.load(out)
    t = time.perf_counter()
    for wire in wires:
        st = pickle.loads(wire)
        _, judged, summary = commit_staged(led, st, {}, "run", 0.5)
        chunk_stats(judged, led, None, summary)
    flow = (time.perf_counter() - t) / (len(chunks) * files)
    return flow, worker, len(wires[0]), len(pickle.dumps(chunks[0]))


def put_latency(uri: str, n: int = 50) -> float:
    """Median seconds of one conditional PUT (If-Match), what a lease renewal costs."""
    from tasks.classify.lease import Lease
    from tasks.io.storage import Location

    lease = Lease(Location(uri), ttl=600, owner="bench")
    lease.acquire()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        lease.renew()
        times.append(time.perf_counter() - t)
    lease.release()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--s3", action="store_true")
    args = ap.parse_args()
    chunks = [make_chunk(args.files, s) for s in range(args.chunks)]
    work = Path(tempfile.mkdtemp(prefix="bench-commit-"))
    out: dict = {"files_per_chunk": args.files, "chunks": args.chunks}
    out["local_before_s_per_file"] = before(str(work / "a"), chunks, args.files)
    flow, worker, wire_after, wire_before = after(str(work / "b"), chunks, args.files)
    out.update(local_after_s_per_file=flow, worker_stage_s_per_file=worker,
               bytes_to_flow_per_chunk_before=wire_before,
               bytes_to_flow_per_chunk_after=wire_after)
    if args.s3:
        import boto3
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        import os

        host, port = server.get_host_and_port()
        os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="x",
                          AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
        boto3.client("s3").create_bucket(Bucket="bench")
        out["s3_before_s_per_file"] = before("s3://bench/a", chunks, args.files)
        out["s3_after_s_per_file"] = after("s3://bench/b", chunks, args.files)[0]
        out["s3_conditional_put_s"] = put_latency("s3://bench/lease")
        server.stop()
    for k in [k for k in out if k.endswith("_before_s_per_file")]:
        k2 = k.replace("before", "after")
        out[k.replace("_before_s_per_file", "_ratio_after_over_before")] = out[k2] / out[k]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
