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
from tests.support.classify_support import with_onnx
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
    """Generated batches plus one unreadable file, a tiny model, and the threaded run's output.

    The model carries a verified model.onnx, as a retrained one does: the worker processes run
    it on ONNX Runtime and skip TensorFlow's import (about 8 s of CPU a process). The killed
    worker test below keeps a Keras-only model, so Dask workers on Keras stay tested."""
    root = tmp_path_factory.mktemp("dask_site")
    inp = make_batches(root, batches=3, per_batch=6, seed=31)
    np.save(inp / "batch_001" / "wrong_shape.npy", np.zeros((2, 3), dtype=np.float32))
    register_tiny_model(root / "registry")
    with_onnx(root / "registry", root / "registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSEBATCH_XLA", "0")  # the same compiled form as the workers below
        from flows.classify import classify_flow

        summary = classify_flow(input_dir=str(inp), output_dir=str(root / "out_threads"),
                                registry_dir=str(root / "registry"), batch_size=8,
                                chunk_files=CHUNK, quiet_seconds=0)
    assert summary["classified"] == 18 and summary["rejected"] == 1
    assert summary["engine"] == "onnx"
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
    assert summary["engine"] == "onnx"
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


@pytest.mark.slow
def test_relative_paths_reach_workers_started_in_another_folder(
        site: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A scheduler and a worker started as their own processes in another working folder, as
    on other machines; the run is given relative paths. The workers must read the files the
    flow saw (before: every file 'vanished', nothing classified, and the run said ok)."""
    import shutil
    import time

    from flows.classify import classify_flow
    from flows.runtime.runners import runner_spec, with_task_runner

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    env = {**os.environ, "POSEBATCH_XLA": "0"}
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              cwd=elsewhere, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "1",
                                       "--nthreads", "1", "--no-dashboard"], cwd=elsewhere,
                                      env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
        monkeypatch.chdir(site["root"])
        monkeypatch.setenv("POSEBATCH_XLA", "0")
        flow = with_task_runner(classify_flow, runner_spec(dask_address=address))
        summary = flow(input_dir=site["input"].name, output_dir="out_relative",
                       registry_dir="registry", batch_size=8, chunk_files=CHUNK,
                       quiet_seconds=0)
    finally:
        for p in procs[::-1]:
            p.terminate()
            p.wait(timeout=30)
    assert summary["classified"] == 18 and summary["vanished"] == 0
    assert_same_rows(table_rows(site["threads"]), table_rows(site["root"] / "out_relative"))


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path: Path):
    """Two `dask worker` processes; one is SIGKILLed once the run has committed its first
    chunk. Dask reschedules the lost worker's chunks on the other: the run completes, and
    every frame is in the output exactly once (what the README promises)."""
    import shutil
    import signal
    import time

    inp = make_batches(tmp_path, batches=6, per_batch=20, seed=41)
    register_tiny_model(tmp_path / "registry")
    out = tmp_path / "out"
    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(POSEBATCH_XLA="0")
    sched_file = tmp_path / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              env=env, **quiet)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        workers = [subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads",
                                     "1", "--no-dashboard"], env=env, **quiet)
                   for _ in range(2)]
        procs += workers
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        run = subprocess.Popen([sys.executable, "-m", "flows.cli", "classify", "--input",
                                str(inp), "--output", str(out), "--registry",
                                str(tmp_path / "registry"), "--batch-size", "8",
                                "--chunk-files", "4", "--quiet-seconds", "0", "--data",
                                str(tmp_path), "--dask-address", address, "--json"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not list((out / "predictions").rglob("*.parquet")):
            assert run.poll() is None, run.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no chunk was ever committed"
            time.sleep(0.05)
        workers[0].send_signal(signal.SIGKILL)
        committed_at_kill = len(list((out / "predictions").rglob("*.parquet")))
        stdout, stderr = run.communicate(timeout=600)
    finally:
        for p in procs[::-1]:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
    assert workers[0].returncode == -signal.SIGKILL
    assert committed_at_kill < 30  # mid-run: most of the 30 chunks were still to do
    assert run.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["classified"] == 120 and summary["vanished"] == 0
    rows = table_rows(out)
    keys = [(r["source_path"], r["frame_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == 120  # every frame once
    assert sorted({k[0] for k in keys}) == npy_files(inp)
