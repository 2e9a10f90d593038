"""Benchmark (the issue's target run): two machines, one ``s3://`` output, SIGKILLs.

    .venv/bin/python bench/bench_two_machines.py [--rounds 10] [--lease 12] [--json]

Two "machines" share nothing but a moto S3 server on loopback (and the Prefect API): each
is a ``posebatch classify --workers 1`` process (its own Dask worker) with its own working,
temporary, cache and Prefect folders. Input, output and registry are on ``s3://``.

Each round uploads new batches, then starts both machines at once on the same output. In
every other round the machine holding the writer lease is SIGKILLed (its whole process
group: the flow and its Dask worker, as a machine dying would) once it has committed a chunk
of the round; the other, refused while the dead lease lasts, runs again until it takes the
lease over. After the rounds one more run drains what is left, then the output is checked:
every uploaded frame exactly once in ``predictions``, each file once in the ledger, and
every refusal naming the lease holder and when its lease ends.

Prints a table (or ``--json``): per round the exits, kills, takeovers and refusals, and the
totals with the frames missing and duplicated (both must be 0). Takes minutes: each run
starts Prefect, Dask and TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FILES_PER_BATCH = 8
BATCHES_PER_ROUND = 2
CHUNK_FILES = 2


def upload_round(bucket: str, work: Path, r: int) -> list[str]:
    """Generate this round's batches and upload them (``_SUCCESS`` last); the .npy keys."""
    from tasks.io.storage import Location
    from tasks.synth.generate import generate_dataset

    src = work / f"src{r}"
    generate_dataset(src, per_class=0, seed=100 + r, incoming_batches=BATCHES_PER_ROUND,
                     incoming_per_batch=FILES_PER_BATCH)
    loc = Location(f"s3://{bucket}/incoming")
    files = sorted((p for p in (src / "incoming").rglob("*") if p.is_file()),
                   key=lambda p: (p.name == "_SUCCESS", p.as_posix()))
    keys = []
    for p in files:
        key = f"r{r:02d}_{p.relative_to(src / 'incoming').as_posix()}"
        loc.write_bytes(key, p.read_bytes())
        keys.append(key)
    return [k for k in keys if k.endswith(".npy")]


def register_model(uri: str) -> None:
    """A small untrained CNN in the S3 registry: real Keras, fast to load."""
    from models.network import build_cnn
    from models.registry import Registry
    from models.spec import class_names

    names = class_names()
    reg = Registry(uri)
    entry = reg.register(build_cnn(len(names), filters=(8, 8), dense=16), {
        "class_names": names,
        "input_layout": {"shape": [None, 17, 64, 48], "axes": ["batch", "keypoint", "y", "x"]},
        "temperature": 1.0, "metrics": {}, "params": {"tiny": True}})
    reg.set_production(entry.version, reason="bench model")


def machine(name: str, root: Path, base: dict[str, str], lease: float) -> dict:
    home = root / name
    for sub in ("work", "tmp", "cache", "prefect"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {**base, "PYTHONPATH": str(REPO), "TMPDIR": str(home / "tmp"),
           "XDG_CACHE_HOME": str(home / "cache"), "PREFECT_HOME": str(home / "prefect"),
           "POSEBATCH_DATA_ROOT": str(home / "work" / "data"),
           "POSEBATCH_LEASE_SECONDS": str(lease), "POSEBATCH_XLA": "0",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("POSEBATCH_CRASH_AT", None)
    return {"name": name, "cwd": home / "work", "env": env, "log": home / "runs.log"}


def start(m: dict, bucket: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flows.cli", "classify", "--input", f"s3://{bucket}/incoming",
           "--output", f"s3://{bucket}/out", "--registry", f"s3://{bucket}/registry",
           "--batch-size", "4", "--chunk-files", str(CHUNK_FILES), "--quiet-seconds", "0",
           "--workers", "1", "--json"]
    return subprocess.Popen(cmd, cwd=m["cwd"], env=m["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def lease_now(bucket: str) -> dict | None:
    from tasks.classify.lease import Lease
    from tasks.io.storage import Location

    got = Lease(Location(f"s3://{bucket}/out"), owner="bench").read()
    return got[0] if got else None


def commits(bucket: str) -> int:
    """Commit records (a group file holds several: format 4)."""
    from tasks.classify.ledger import COMMITS
    from tasks.classify.ledger.records import records_from_json
    from tasks.io.storage import Location

    loc = Location(f"s3://{bucket}/out")
    return sum(len(records_from_json(loc.read_bytes(f.path), f.path))
               for f in loc.list_files() if f.path.startswith(COMMITS + "/c-"))


def finish(p: subprocess.Popen, m: dict, timeout: float = 600) -> dict:
    out, err = p.communicate(timeout=timeout)
    with open(m["log"], "a") as log:
        log.write(f"--- exit {p.returncode}\n{err[-4000:]}\n")
    summary = None
    if p.returncode == 0 and out.strip():
        summary = json.loads(out.strip().splitlines()[-1])
    refusal = next((ln for ln in err.splitlines() if "lease held by" in ln), None)
    return {"code": p.returncode, "summary": summary, "refusal": refusal, "pid": p.pid}


def holder_pid(lease: dict | None) -> int | None:
    owner = (lease or {}).get("owner", "")
    return int(owner.split()[1]) if owner.startswith("pid ") else None


def run_round(r: int, kill: bool, bucket: str, machines: list[dict]) -> dict:
    """Both machines at once; in a kill round the lease holder dies after its first commit
    of the round and the other retries until it has taken the lease over."""
    row = {"round": r, "kill": kill, "exits": [], "refusals": 0, "refusals_naming": 0,
           "takeovers": 0, "classified": 0}
    before = commits(bucket)
    procs = {m["name"]: (start(m, bucket), m) for m in machines}
    victim = None
    if kill:
        deadline = time.time() + 300
        while time.time() < deadline and victim is None:
            pid = holder_pid(lease_now(bucket))
            owner = next((n for n, (p, _) in procs.items() if p.pid == pid), None)
            if owner and commits(bucket) > before and procs[owner][0].poll() is None:
                os.killpg(procs[owner][0].pid, signal.SIGKILL)
                victim = owner
            elif all(p.poll() is not None for p, _ in procs.values()):
                break
            time.sleep(0.2)
    results = {n: finish(p, m) for n, (p, m) in procs.items()}
    for n, res in results.items():
        if n == victim:
            row["exits"].append("killed")
            continue
        row["exits"].append(res["code"])
        if res["code"] == 3:
            row["refusals"] += 1
            row["refusals_naming"] += bool(res["refusal"] and " until 20" in res["refusal"])
        if res["summary"]:
            row["classified"] += res["summary"].get("classified", 0)
    if victim is not None:
        row["killed"] = victim
        survivor = next(m for m in machines if m["name"] != victim)
        row.update(retry(survivor, bucket, victim_pid=results[victim]["pid"]))
    return row


def retry(m: dict, bucket: str, victim_pid: int) -> dict:
    """The survivor runs again (a schedule would) until it gets the lease: refused while the
    dead holder's lease lasts, then it takes over."""
    out = {"retry_refusals": 0, "retry_refusals_naming": 0}
    while True:
        dead = lease_now(bucket)
        res = finish(start(m, bucket), m)
        if res["code"] == 3:
            out["retry_refusals"] += 1
            out["retry_refusals_naming"] += bool(res["refusal"] and f"pid {victim_pid} "
                                                 in res["refusal"])
            left = float((lease_now(bucket) or {}).get("expires_at", 0)) - time.time()
            time.sleep(max(0.5, left + 0.5))
            continue
        if res["code"] != 0:
            raise SystemExit(f"{m['name']} failed with exit {res['code']}: see {m['log']}")
        out["takeovers"] = int(holder_pid(dead) == victim_pid)
        out["retry_classified"] = res["summary"].get("classified", 0)
        return out


def check(bucket: str, npy: list[str]) -> dict:
    """Every uploaded frame once in the predictions, each file once in the ledger."""
    import pyarrow.dataset as ds

    from tasks.classify.ledger import Ledger
    from tasks.io.storage import Location

    loc = Location(f"s3://{bucket}/out")
    table = ds.dataset(loc.path("predictions"), filesystem=loc.fs, format="parquet",
                       partitioning="hive").to_table(columns=["source_path", "frame_index"])
    seen = Counter(zip(table["source_path"].to_pylist(), table["frame_index"].to_pylist(),
                       strict=True))
    expected = {(p, 0) for p in npy}
    led = Ledger.load(loc)
    paths = Counter(led.entries["path"].to_pylist())
    return {"frames_expected": len(expected), "frames_written": sum(seen.values()),
            "missing": len(expected - set(seen)), "duplicated": sum(c - 1 for c in seen.values()
                                                                    if c > 1),
            "unexpected": len(set(seen) - expected),
            "ledger_files_twice": sum(1 for c in paths.values() if c > 1),
            "ledger_entries": led.entries.num_rows,
            "commits": len(set(led.entries["commit_id"].to_pylist()))}


def table(rows: list[dict], total: dict) -> str:
    head = "| round | kill | exits (A, B) | refusals (naming holder) | takeovers | classified |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        refusals = r["refusals"] + r.get("retry_refusals", 0)
        naming = r["refusals_naming"] + r.get("retry_refusals_naming", 0)
        lines.append(f"| {r['round']} | {r.get('killed', '-')} | {r['exits']} | "
                     f"{refusals} ({naming}) | {r.get('takeovers', 0)} | "
                     f"{r['classified'] + r.get('retry_classified', 0)} |")
    lines.append("")
    lines.append(" ".join(f"{k}={v}" for k, v in total.items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--lease", type=float, default=12.0, help="POSEBATCH_LEASE_SECONDS")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import logging

    import boto3
    from moto.server import ThreadedMotoServer
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"   # its heartbeat locks SQLite
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    bucket = "two-machines"
    boto3.client("s3").create_bucket(Bucket=bucket)
    work = Path(tempfile.mkdtemp(prefix="bench-two-machines-"))
    register_model(f"s3://{bucket}/registry")
    t0 = time.time()
    with prefect_test_harness(server_startup_timeout=120):
        base = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        machines = [machine(n, work, base, args.lease) for n in ("A", "B")]
        npy: list[str] = []
        rows = []
        for r in range(1, args.rounds + 1):
            npy += upload_round(bucket, work, r)
            rows.append(run_round(r, r % 2 == 1, bucket, machines))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        drain = retry(machines[0], bucket, victim_pid=-1)   # what refusals and kills left
    total = {"rounds": len(rows), "kills": sum("killed" in r for r in rows),
             "takeovers": sum(r.get("takeovers", 0) for r in rows),
             "refusals": sum(r["refusals"] + r.get("retry_refusals", 0) for r in rows),
             "refusals_naming_holder": sum(r["refusals_naming"] + r.get("retry_refusals_naming",
                                                                       0) for r in rows),
             "drained": drain.get("retry_classified", 0), **check(bucket, npy),
             "seconds": round(time.time() - t0)}
    server.stop()
    print(json.dumps({"rounds": rows, "total": total}, indent=1) if args.json
          else table(rows, total))


if __name__ == "__main__":
    main()
