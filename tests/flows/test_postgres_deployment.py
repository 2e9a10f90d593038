"""Prefect on PostgreSQL: a real PostgreSQL 15 on loopback (tests/support/postgres.py), a
Prefect server on it, this repository's prefect.yaml deployed, a process worker, and the
nightly classification run end to end; the flow run is read back from PostgreSQL itself and
``posebatch doctor`` names the database. Every process is stopped by its id at the end."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from flows.runtime.serve import PROJECT_DIR, start_server, stop_process
from tests.support.ops import Procs, make_batches, npy_files, predictions, register_tiny_model, run
from tests.support.postgres import postgres

PREFECT = [sys.executable, "-m", "prefect"]


def _flow_runs_in_postgres(url: str) -> list[tuple[str, str]]:
    import asyncpg

    async def query() -> list[tuple[str, str]]:
        con = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            rows = await con.fetch("select f.name, r.state_type from flow_run r "
                                   "join flow f on f.id = r.flow_id")
        finally:
            await con.close()
        return [(r[0], str(r[1])) for r in rows]

    return asyncio.run(query())


@pytest.mark.slow
def test_a_prefect_server_on_postgresql_runs_the_deployed_classification(tmp_path):
    data = tmp_path / "data"
    make_batches(data, batches=1, per_batch=4, seed=23)
    register_tiny_model(data / "registry")
    with postgres() as url:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        base.update(PREFECT_API_DATABASE_CONNECTION_URL=url, DO_NOT_TRACK="1",
                    PREFECT_SERVER_ANALYTICS_ENABLED="false")
        server, env = start_server(tmp_path / "prefect", env=base,
                                   log=tmp_path / "server.log", timeout=240)
        env.update(PREFECT_WORKER_QUERY_SECONDS="2", POSEBATCH_XLA="0")
        procs = Procs()
        try:
            run(PREFECT + ["work-pool", "create", "posebatch", "--type", "process"], env)
            out = run(PREFECT + ["--no-prompt", "deploy", "--name", "nightly"], env,
                      cwd=PROJECT_DIR).stdout
            assert "classify/nightly" in out
            procs.start(PREFECT + ["worker", "start", "--pool", "posebatch"], env,
                        tmp_path / "worker.log", cwd=tmp_path)
            output = tmp_path / "output"
            res = run(PREFECT + ["deployment", "run", "classify/nightly",
                                 "-p", f"input_dir={data / 'incoming'}",
                                 "-p", f"output_dir={output}",
                                 "-p", f"registry_dir={data / 'registry'}",
                                 "-p", "batch_size=32", "--watch", "--watch-timeout", "600"],
                      env, timeout=660)
            assert "Completed" in res.stdout, res.stdout[-2000:]
            table = predictions(output)
            assert sorted(table.column("source_path").to_pylist()) == \
                npy_files(data / "incoming")
            assert ("classify", "COMPLETED") in _flow_runs_in_postgres(url)
            report = json.loads(run([sys.executable, "-m", "flows.cli", "doctor", "--data",
                                     str(data), "--output", str(output), "--json"],
                                    env).stdout.strip().splitlines()[-1])
            assert report["prefect"]["database"].startswith("postgresql+asyncpg://postgres@")
            assert report["prefect"]["last_classify_run"]["state"] == "COMPLETED"
        finally:
            procs.stop_all()
            stop_process(server)
