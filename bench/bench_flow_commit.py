"""Benchmark: the flow process's cost per committed file, before and after worker-side writes.

    .venv/bin/python bench/bench_flow_commit.py [--files 2048] [--chunks 8] [--groups 1,4,8] [--s3]

What the flow process does per chunk on Dask, timed in one process without Prefect or a
model (the model's work is the workers' and does not change):

- before: unpickle the worker's ``ChunkResult`` (every frame's probabilities), judge it,
  build and write the Parquet parts, commit (``commit_chunk``), count (``chunk_stats``);
- after: unpickle the worker's ``StagedChunk`` (no rows), check that its files are new,
  commit the staged parts and the worker's entries object (``commit_staged_group``, which
  also counts; on ``s3://`` the parts are moved in place on background threads, timed
  until the last is); the worker's added cost (``stage_chunk``) is timed apart. With
  ``--groups 1,4,8``: one chunk a record (each ready alone), then 4 and 8 chunks ready at
  once committed with one record (group commit), the flow's case when many workers finish
  while it commits.

Chunks are one frame a file, 17 classes (the deployed model's shape), ``--files`` files
each (the default chunk size). ``--s3`` also runs both against a moto S3 server on
loopback (in its own process), under the output's writer lease (every commit fences), and times one
conditional PUT (a lease renewal). Each path is run ``--repeat`` times, before and after
interleaved, and the best kept (the machine is shared). Prints JSON: seconds per committed
file for each path, and the projection inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import statistics
import subprocess
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


def sizes(chunk) -> dict[str, tuple[int, int]]:
    """Size and mtime of each file, as discovery hands them to the commit (the flow builds
    this dict for every chunk either way)."""
    return {f.path: (8 + 17 * 64 * 48 * 4, 0) for f in chunk.files}


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
        _, tables = commit_chunk(led, judged, sizes(res), new_commit_id(), "run")
        chunk_stats(judged, led, tables.get("predictions"))
    return (time.perf_counter() - t) / (len(chunks) * files)


def after(out: str, chunks: list, files: int, group: int = 1
          ) -> tuple[float, float, int, int]:
    """``group`` chunks ready at once are committed together (``commit_staged_group``: one
    record for them all); 1: one at a time, one record each."""
    from tasks.classify.ledger import Ledger, new_commit_id
    from tasks.classify.staged import commit_staged_group, stage_chunk

    t = time.perf_counter()
    staged = [stage_chunk(out, new_commit_id(), c, "run", None, 0.5, sizes(c)) for c in chunks]
    worker = (time.perf_counter() - t) / (len(chunks) * files)
    wires = [pickle.dumps(s) for s in staged]
    led = Ledger.load(out)
    if led.loc.is_remote:   # as the flow does on object storage: parts moved off its path
        led.finalize_in_background()
    t = time.perf_counter()
    for k in range(0, len(wires), group):
        ready = [pickle.loads(w) for w in wires[k:k + group]]
        commit_staged_group(led, ready, [sizes(c) for c in chunks[k:k + group]], "run", 0.5)
    critical = (time.perf_counter() - t) / (len(chunks) * files)   # the flow's own path
    led.flush()                                            # every part in place
    flow = (time.perf_counter() - t) / (len(chunks) * files)
    return flow, worker, len(wires[0]), len(pickle.dumps(chunks[0])), critical


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


def measure(base: str, chunks: list, files: int, repeat: int, groups: list[int]) -> dict:
    """Best of ``repeat`` for each path, before and after (one record a chunk, then
    ``groups`` chunks a record) interleaved (fresh outputs each time); on ``s3://`` under
    the output's writer lease, so every commit fences. Every run's value is kept too."""
    from tasks.classify.ledger import OutputLock

    names = ["before"] + [f"after_group{g}" for g in groups]
    best: dict = {}
    runs: dict = {n: [] for n in names}
    for r in range(repeat):
        for name in names:
            out = f"{base}/{name}-{r}"
            with OutputLock(out, lease_seconds=600) if out.startswith("s3://") \
                    else contextlib.nullcontext():
                got = (before(out, chunks, files),) if name == "before" \
                    else after(out, chunks, files, int(name.removeprefix("after_group")))
            runs[name].append(round(got[0] * 1e6, 1))
            if got[0] < best.get(name, (float("inf"),))[0]:
                best[name] = got
    flow, worker, wire_after, wire_before, _ = best[f"after_group{groups[0]}"]
    out = {"before_s_per_file": best["before"][0], "worker_stage_s_per_file": worker,
           "bytes_to_flow_per_chunk_before": wire_before,
           "bytes_to_flow_per_chunk_after": wire_after, "us_per_file_every_run": runs}
    for g in groups:
        out[f"after_group{g}_s_per_file"] = best[f"after_group{g}"][0]
        out[f"after_group{g}_commit_path_s_per_file"] = best[f"after_group{g}"][4]
        out[f"ratio_group{g}_over_before"] = best[f"after_group{g}"][0] / best["before"][0]
    return out


def moto_process() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in a process of its own (S3 is not in the flow's process: in the
    same one, its request handling took the GIL from the flow's work and inflated ``c``)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()",
                             "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("moto_server did not start") from None
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5, help="best of this many, interleaved")
    ap.add_argument("--groups", default="1,4,8",
                    help="chunks committed together (ready at once), comma-separated")
    ap.add_argument("--s3", action="store_true")
    args = ap.parse_args()
    groups = [int(g) for g in args.groups.split(",")]
    chunks = [make_chunk(args.files, s) for s in range(args.chunks)]
    work = Path(tempfile.mkdtemp(prefix="bench-commit-"))
    out: dict = {"files_per_chunk": args.files, "chunks": args.chunks, "repeat": args.repeat}
    out.update({f"local_{k}": v for k, v in
                measure(str(work), chunks, args.files, args.repeat, groups).items()})
    if args.s3:
        import boto3

        server, endpoint = moto_process()
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="x",
                          AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
        try:
            boto3.client("s3").create_bucket(Bucket="bench")
            out.update({f"s3_{k}": v for k, v in
                        measure("s3://bench", chunks, args.files, args.repeat, groups).items()
                        if not k.startswith(("bytes", "worker"))})
            out["s3_conditional_put_s"] = put_latency("s3://bench/lease")
        finally:
            server.kill()
            server.wait()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
