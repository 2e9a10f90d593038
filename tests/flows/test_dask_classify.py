"""Classification on Dask: a real local cluster on 127.0.0.1 (`posebatch classify --workers 2`)
and an existing scheduler (`--dask-address`) give the threaded default's Parquet outputs row
for row, and each worker process builds the model once for all the chunks it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.support.ops import (
    assert_same_rows,
    count_model_loads,
    make_batches,
    model_load_counts,
    npy_files,
    register_tiny_model,
    table_rows,
)

CHUNK = 4          # files per task: several chunks per worker on a small input


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, prefect_server) -> dict[str, Path]:
    """Generated batches plus one unreadable file, a tiny model, and the threaded run's output."""
    root = tmp_path_factory.mktemp("dask_site")
    inp = make_batches(root, batches=3, per_batch=6, seed=31)
    np.save(inp / "batch_001" / "wrong_shape.npy", np.zeros((2, 3), dtype=np.float32))
    register_tiny_model(root / "registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSEBATCH_XLA", "0")  # the same compiled form as the workers below
        from flows.classify import classify_flow

        summary = classify_flow(input_dir=str(inp), output_dir=str(root / "out_threads"),
                                registry_dir=str(root / "registry"), batch_size=8,
                                chunk_files=CHUNK, quiet_seconds=0)
    assert summary["classified"] == 18 and summary["rejected"] == 1
    return {"root": root, "input": inp, "registry": root / "registry",
            "threads": root / "out_threads"}


def _classify_args(site: dict[str, Path], output: Path) -> list[str]:
    return ["classify", "--input", str(site["input"]), "--output", str(output),
            "--registry", str(site["registry"]), "--batch-size", "8", "--chunk-files",
            str(CHUNK), "--quiet-seconds", "0", "--data", str(site["root"]), "--json"]


def test_workers_and_address_are_exclusive_and_checked():
    runner = CliRunner()
    res = runner.invoke(app, ["classify", "--workers", "2", "--dask-address",
                              "tcp://127.0.0.1:8786", "--json"])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(app, ["classify", "--dask-address", "127.0.0.1:8786", "--json"])
    assert res.exit_code == 2 and "not a Dask scheduler address" in res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["ok"] is False


@pytest.mark.slow
def test_cli_local_cluster_matches_the_threaded_run(site: dict[str, Path]):
    out = site["root"] / "out_workers"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(POSEBATCH_XLA="0")
    res = subprocess.run([sys.executable, "-m", "flows.cli", *_classify_args(site, out),
                          "--workers", "2"], env=env, capture_output=True, text=True,
                         timeout=600, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "local Dask cluster, 2 worker process(es) on 127.0.0.1" in res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["classified"] == 18 and summary["rejected"] == 1
    rows = table_rows(out)
    assert sorted({r["source_path"] for r in rows}) == \
        [p for p in npy_files(site["input"]) if not p.endswith("wrong_shape.npy")]
    assert_same_rows(table_rows(site["threads"]), rows)
    assert table_rows(site["threads"], "rejections") == table_rows(out, "rejections")


@pytest.mark.slow
def test_existing_scheduler_loads_the_model_once_per_worker(site: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch):
    from distributed import Client, LocalCluster

    from flows.classify import classify_flow
    from flows.runtime.runners import local_cluster_kwargs, runner_spec, with_task_runner

    monkeypatch.setenv("POSEBATCH_XLA", "0")   # inherited by the worker processes
    out = site["root"] / "out_address"
    with LocalCluster(**local_cluster_kwargs(2)) as cluster, Client(cluster) as client:
        pids = client.run(count_model_loads)    # before the flow: count from the start
        flow = with_task_runner(classify_flow,
                                runner_spec(dask_address=cluster.scheduler_address))
        summary = flow(input_dir=str(site["input"]), output_dir=str(out),
                       registry_dir=str(site["registry"]), batch_size=8, chunk_files=CHUNK,
                       quiet_seconds=0)
        counts = client.run(model_load_counts)
    assert os.getpid() not in pids.values() and len(set(pids.values())) == 2
    chunks = -(-19 // CHUNK)                    # 18 good files + 1 bad one, 4 per task
    assert summary["classified"] == 18
    assert {c["builds"] for c in counts.values()} == {1}, counts   # once per worker
    # every chunk looked the model up on a worker, plus one preload per worker
    assert sum(c["lookups"] for c in counts.values()) == chunks + 2, counts
    assert_same_rows(table_rows(site["threads"]), table_rows(out))
    assert table_rows(site["threads"], "rejections") == table_rows(out, "rejections")
