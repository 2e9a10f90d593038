"""Task runners: option validation, and real Dask clusters on loopback running real flows,
with the per-process cache / worker preload loading once per worker process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.runtime.runners import (
    RunnerSpec,
    local_cluster_kwargs,
    make_task_runner,
    per_process,
    preload_on_workers,
    runner_spec,
)


def test_runner_spec_validates_options():
    assert runner_spec().kind == "threads"
    assert runner_spec(workers=2).kind == "dask-local"
    assert runner_spec(dask_address="tcp://10.0.0.5:8786").kind == "dask"
    with pytest.raises(ValueError, match="not both"):
        runner_spec(workers=2, dask_address="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="at least 1"):
        runner_spec(workers=0)
    with pytest.raises(ValueError, match="not a Dask scheduler address"):
        runner_spec(dask_address="10.0.0.5:8786")
    assert "2 worker" in runner_spec(workers=2).describe()


def test_local_cluster_is_loopback_without_dashboard_and_shares_cores():
    kw = local_cluster_kwargs(4, cpu_count=8)
    assert kw["host"] == "127.0.0.1" and kw["dashboard_address"] is None
    assert kw["processes"] is True and kw["n_workers"] == 4
    assert kw["env"]["TF_NUM_INTRAOP_THREADS"] == "2"
    assert local_cluster_kwargs(4, cpu_count=2)["env"]["OMP_NUM_THREADS"] == "1"


def test_thread_runner_is_the_default():
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = make_task_runner(RunnerSpec(threads=3))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    assert isinstance(make_task_runner(), ThreadPoolTaskRunner)


def test_per_process_builds_once():
    calls: list[int] = []

    def build() -> int:
        calls.append(1)
        return len(calls)

    key = ("test", os.getpid(), id(calls))
    assert per_process(key, build) == 1
    assert per_process(key, build) == 1
    assert calls == [1]


# --- real clusters -------------------------------------------------------------------------

def record_load(log: str) -> int:
    """Stands in for loading a model: appends this process id to ``log`` (once per process)."""
    def load() -> int:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        return os.getpid()

    return per_process(("model", log), load)


def _chunk(log: str, items: list[int]) -> tuple[int, int, list[int]]:
    loaded_by = record_load(log)
    return os.getpid(), loaded_by, [i * i for i in items]


def _flow(runner, log: str, preload: bool):
    from prefect import flow, task

    chunk = task(_chunk, name="chunk")

    @flow(task_runner=runner)
    def squares(log: str, preload: bool) -> tuple[bool, list[tuple[int, int, list[int]]]]:
        preloaded = preload_on_workers(record_load, log) if preload else False
        futures = [chunk.submit(log, list(range(k * 5, k * 5 + 5))) for k in range(6)]
        return preloaded, [f.result() for f in futures]

    return squares(log, preload)


def _loads(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


@pytest.mark.slow
def test_local_dask_cluster_runs_flow_tasks_in_worker_processes(prefect_server, tmp_path: Path):
    log = tmp_path / "loads.txt"
    preloaded, results = _flow(make_task_runner(runner_spec(workers=2)), str(log), True)
    assert preloaded is True
    assert [sq for *_, sq in results] == [[i * i for i in range(k * 5, k * 5 + 5)]
                                          for k in range(6)]
    task_pids = {pid for pid, _, _ in results}
    assert os.getpid() not in task_pids          # tasks ran in worker processes
    loads = _loads(log)
    assert len(loads) == len(set(loads)) == 2    # each of the 2 workers loaded exactly once
    assert task_pids <= set(loads)
    assert all(pid == loaded_by for pid, loaded_by, _ in results)


@pytest.mark.slow
def test_existing_scheduler_address(prefect_server, tmp_path: Path):
    from distributed import LocalCluster

    log = tmp_path / "loads.txt"
    with LocalCluster(**local_cluster_kwargs(1)) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        runner = make_task_runner(runner_spec(dask_address=cluster.scheduler_address))
        preloaded, results = _flow(runner, str(log), True)
    assert preloaded is True
    assert len({pid for pid, _, _ in results}) == 1
    assert _loads(log) == [results[0][0]]        # one worker, loaded once for six tasks


def test_thread_runner_flow_loads_once_and_skips_preload(prefect_server, tmp_path: Path):
    log = tmp_path / "loads.txt"
    preloaded, results = _flow(make_task_runner(RunnerSpec(threads=3)), str(log), True)
    assert preloaded is False
    assert {pid for pid, _, _ in results} == {os.getpid()}
    assert _loads(log) == [os.getpid()]
