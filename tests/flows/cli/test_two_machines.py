"""Two "machines" sharing nothing but an S3 endpoint (the session's moto server): real
``posebatch classify`` processes with their own working, temporary and cache folders; input,
output and registry on ``s3://``. A second writer is refused naming the lease holder and its
expiry; a writer SIGKILLed right after a commit keeps the output until its lease expires,
then the other machine takes over and every frame is in the output exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.classify.lease import Lease, LeaseHeld
from tasks.classify.ledger import Ledger
from tasks.io.storage import Location
from tests.support.ops import make_batches, register_tiny_model, remote_rows, upload_tree

LEASE_SECONDS = 12   # long enough that a loaded machine still sees the dead holder's lease
REPO = Path(__file__).resolve().parents[3]  # this checkout's code, from any working folder


def _machine(name: str, root: Path, base: dict[str, str]) -> dict:
    home = root / name
    for sub in ("work", "tmp", "cache"):
        (home / sub).mkdir(parents=True)
    env = {**base, "PYTHONPATH": str(REPO), "TMPDIR": str(home / "tmp"),
           "XDG_CACHE_HOME": str(home / "cache"),
           "POSEBATCH_DATA_ROOT": str(home / "work" / "data"),
           "POSEBATCH_LEASE_SECONDS": str(LEASE_SECONDS), "POSEBATCH_XLA": "0",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("POSEBATCH_CRASH_AT", None)
    return {"cwd": home / "work", "env": env}


def _classify(machine: dict, bucket: str, crash_at: str = "") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "flows.cli", "classify", "--input", f"s3://{bucket}/incoming",
           "--output", f"s3://{bucket}/out", "--registry", f"s3://{bucket}/registry",
           "--batch-size", "4", "--chunk-files", "4", "--quiet-seconds", "0", "--json"]
    env = {**machine["env"], **({"POSEBATCH_CRASH_AT": crash_at} if crash_at else {})}
    return subprocess.run(cmd, cwd=machine["cwd"], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_two_machines_one_output_refusals_name_the_holder_and_nothing_is_lost(
        s3_bucket: str, prefect_server, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    src = make_batches(tmp_path / "src", batches=2, per_batch=6, seed=31)
    npy = sorted(p for p in upload_tree(src, f"s3://{s3_bucket}/incoming")
                 if p.endswith(".npy"))
    register_tiny_model(f"s3://{s3_bucket}/registry")
    base = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    laptop, nightly = (_machine(n, tmp_path, base) for n in ("laptop", "nightly"))

    # A writer elsewhere holds the lease: refused at once, naming it and when it ends.
    other = Lease(Location(f"s3://{s3_bucket}/out"), ttl=30, owner="pid 7 on ci-runner")
    other.acquire()
    try:
        res = _classify(laptop, s3_bucket)
        assert res.returncode == 3, res.stderr[-2000:]
        assert "lease held by pid 7 on ci-runner until 20" in res.stderr
    finally:
        other.release()

    # The laptop dies (SIGKILL) right after its first commit, holding the lease.
    res = _classify(laptop, s3_bucket, crash_at="recorded:1")
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    probe = Lease(Location(f"s3://{s3_bucket}/out"), ttl=30, owner="probe")
    with pytest.raises(LeaseHeld, match="lease held by pid "):   # the dead laptop's lease
        probe.acquire()
    left = probe.read()[0]["expires_at"] - time.time()
    time.sleep(max(0.0, left) + 0.5)                 # the dead holder's lease runs out
    res = _classify(nightly, s3_bucket)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["classified"] + 4 == len(npy)    # the laptop's one committed chunk stays

    rows = remote_rows(f"s3://{s3_bucket}/out")
    keys = [(r["source_path"], r["frame_index"]) for r in rows]
    assert sorted(keys) == [(p, 0) for p in npy]     # every frame once: none lost, none twice
    tokens = [r.lease for r in Ledger.load(f"s3://{s3_bucket}/out").records]
    assert all(tokens) and len(set(tokens)) == 2     # laptop's token, then nightly's
