"""Helpers shared by the operations tests (serve, watch, doctor, deployments, runners)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds

from flows.runtime.processes import stop_process
from models.registry import Registry
from models.spec import class_names
from tasks.synth.generate import generate_dataset


def register_tiny_model(registry_dir: Path) -> str:
    """Register and promote a small untrained CNN: real Keras, real registry, fast to load."""
    from models.network import build_cnn

    names = class_names()
    model = build_cnn(len(names), filters=(8, 8), dense=16)
    entry = Registry(registry_dir).register(model, {
        "class_names": names,
        "input_layout": {"shape": [None, 17, 64, 48], "axes": ["batch", "keypoint", "y", "x"]},
        "temperature": 1.0, "metrics": {}, "params": {"tiny": True},
    })
    Registry(registry_dir).set_production(entry.version, reason="test model")
    return entry.version


def make_batches(root: Path, batches: int, per_batch: int, seed: int) -> Path:
    """Generate ``incoming/batch_<k>/`` folders (each with ``_SUCCESS``) under ``root``."""
    generate_dataset(root, per_class=0, seed=seed, incoming_batches=batches,
                     incoming_per_batch=per_batch)
    return root / "incoming"


def move_batch_in(src_batch: Path, input_dir: Path, name: str | None = None) -> Path:
    """Publish a finished batch into ``input_dir`` in one rename (how writers should do it)."""
    dst = input_dir / (name or src_batch.name)
    input_dir.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src_batch), str(dst))
    return dst


def predictions(output_dir: Path):
    """The predictions dataset as a table (empty table if nothing was written yet)."""
    path = output_dir / "predictions"
    if not path.exists():
        return None
    return ds.dataset(path, format="parquet", partitioning="hive").to_table()


def npy_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.npy"))


def table_rows(output_dir: Path, name: str = "predictions") -> list[dict]:
    """A Parquet dataset's rows in a stable order, without what differs between two runs of
    the same input (run id, time stamps and the day partition derived from them)."""
    path = output_dir / name
    return _stable_rows(ds.dataset(path, format="parquet", partitioning="hive").to_table())


def _stable_rows(table) -> list[dict]:
    drop = [c for c in ("flow_run_id", "classified_at", "rejected_at", "date")
            if c in table.column_names]
    rows = table.drop_columns(drop).to_pylist()
    return sorted(rows, key=lambda r: (r["source_path"], r.get("frame_index", 0)))


def assert_same_rows(left: list[dict], right: list[dict], atol: float = 1e-5) -> None:
    """Row for row equal: exact for everything but the model's floats, which may differ in
    the last bits between processes with other thread counts (reduction order)."""
    import numpy as np

    assert len(left) == len(right) > 0
    for a, b in zip(left, right, strict=True):
        floats = {k for k, v in a.items() if isinstance(v, float)
                  or (isinstance(v, list) and v and isinstance(v[0], float))}
        assert {k: v for k, v in a.items() if k not in floats} == \
            {k: v for k, v in b.items() if k not in floats}
        for k in floats:
            assert b[k] is not None and np.allclose(a[k], b[k], rtol=0, atol=atol), (k, a, b)


# --- counting model loads inside Dask worker processes (run there with client.run) ----------

def count_model_loads() -> int:
    """Wrap ``tasks.classify.infer``'s model build and lookup in this process with counters."""
    import tasks.classify.infer as infer

    if getattr(infer, "_posebatch_counts", None) is None:
        counts = {"builds": 0, "lookups": 0}
        build, lookup = infer._build_predictor, infer.load_predictor

        def counted_build(*args, **kwargs):
            counts["builds"] += 1
            return build(*args, **kwargs)

        def counted_lookup(*args, **kwargs):
            counts["lookups"] += 1
            return lookup(*args, **kwargs)

        infer._build_predictor = counted_build
        infer.load_predictor = counted_lookup
        infer._posebatch_counts = counts
    return os.getpid()


def model_load_counts() -> dict[str, int]:
    import tasks.classify.infer as infer

    return dict(infer._posebatch_counts)


# --- a local S3-compatible server (moto in server mode on 127.0.0.1; no network) -------------

@contextlib.contextmanager
def moto_s3(bucket: str = "poses"):
    """Start moto's S3 server on a free loopback port, put dummy credentials and its endpoint
    in ``os.environ`` (inherited by Dask worker processes started meanwhile), create
    ``bucket``; yield the endpoint URL. Everything is undone on exit."""
    from unittest import mock

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        with mock.patch.dict(os.environ, env):
            import boto3

            boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(
                Bucket=bucket)
            yield env["AWS_ENDPOINT_URL"]
    finally:
        _reset_moto(env["AWS_ENDPOINT_URL"])
        server.stop()


def _reset_moto(endpoint: str) -> None:
    """Empty moto's in-memory backends: they are per process, not per server, so a bucket
    left here would reappear, with its objects, in the next server's bucket of that name."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset",
                                                  method="POST"), timeout=10).close()


def upload_tree(folder: Path, uri: str) -> list[str]:
    """Copy every file below ``folder`` to the ``uri`` prefix (``_SUCCESS`` markers last, as
    a writer should); returns the uploaded relative paths."""
    from tasks.io.storage import Location

    loc = Location(uri)
    files = sorted((p for p in folder.rglob("*") if p.is_file()),
                   key=lambda p: (p.name == "_SUCCESS", p.as_posix()))
    for p in files:
        loc.write_bytes(p.relative_to(folder).as_posix(), p.read_bytes())
    return [p.relative_to(folder).as_posix() for p in files]


def remote_rows(uri: str, name: str = "predictions") -> list[dict]:
    """``table_rows`` for an output on object storage."""
    from tasks.io.storage import Location

    loc = Location(uri)
    table = ds.dataset(loc.path(name), filesystem=loc.fs, format="parquet",
                       partitioning="hive").to_table()
    return _stable_rows(table)


# --- processes, runs and polling against a real Prefect server (deployments, alerts) ----

class Procs:
    """Processes started by a test; all killed (by process group id) at the end."""

    def __init__(self) -> None:
        self.items: list[subprocess.Popen[Any]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path, **kw: Any
              ) -> subprocess.Popen[Any]:
        fh = open(log, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        fh.close()
        self.items.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            stop_process(proc)


def run(args: list[str], env: dict[str, str], timeout: float = 300, **kw: Any
        ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL, **kw)
    assert res.returncode == 0, f"{args}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def flow_runs(api: str, flow: str, deployment_id: str | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"flows": {"name": {"any_": [flow]}}}
    if deployment_id:
        body["deployments"] = {"id": {"any_": [deployment_id]}}
    resp = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
    resp.raise_for_status()
    return resp.json()


def deployment(api: str, flow: str, name: str) -> dict[str, Any]:
    resp = httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=10)
    resp.raise_for_status()
    return resp.json()


def wait_for(fn, timeout: float, step: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def modules_loaded(names: tuple[str, ...] = ("tensorflow", "keras", "onnxruntime")
                   ) -> dict[str, bool]:
    """Which of these modules this process has imported (run in Dask workers)."""
    import sys

    return {name: name in sys.modules for name in names}
