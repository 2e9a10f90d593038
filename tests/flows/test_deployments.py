"""prefect.yaml for real: a Prefect server of our own on 127.0.0.1 (its own home, telemetry
off; not the session test harness) keeping its state in a real PostgreSQL 15 on loopback
(tests/support/postgres.py; SQLite where PostgreSQL cannot run, saying so), a process work
pool, `prefect deploy --all` on this repository's prefect.yaml, a worker, the nightly
deployment run to completion, the Parquet output checked, the labeled-data event turned
into a retraining run by the trigger, and `posebatch serve` registering its schedule with
the timezone intact. Every process started here is killed by its process id at the end,
even on failure."""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from flows.runtime.processes import stop_process
from flows.runtime.serve import PROJECT_DIR, load_project
from flows.runtime.server import start_server
from tests.support.classify_support import with_onnx
from tests.support.ops import (
    Procs,
    deployment,
    flow_runs,
    make_batches,
    npy_files,
    predictions,
    register_tiny_model,
    run,
    wait_for,
)

PREFECT = [sys.executable, "-m", "prefect"]
POSEBATCH = [sys.executable, "-m", "flows.cli"]


def test_prefect_yaml_declares_every_deployment_on_a_process_pool():
    """Fast checks of the file itself; the slow tests below deploy it for real."""
    from flows.classify import classify_flow
    from flows.rescore import rescore_flow
    from flows.retrain import retrain_flow

    project = load_project()
    deps = {d["name"]: d for d in project["deployments"]}
    assert set(deps) == {"nightly", "on-demand", "after-promotion"}
    flows = {"nightly": classify_flow, "on-demand": retrain_flow,
             "after-promotion": rescore_flow}
    for name, dep in deps.items():
        path, func = dep["entrypoint"].split(":")
        assert (PROJECT_DIR / path).is_file()
        assert dep["work_pool"]["name"] == "posebatch"
        accepted = inspect.signature(flows[name].fn).parameters
        assert set(dep["parameters"]) <= set(accepted), name  # every parameter is real
        for trig in dep.get("triggers", []):
            assert set(trig["parameters"]) <= set(accepted), name
    assert deps["nightly"]["schedules"][0]["timezone"] == "UTC"
    (trig,) = deps["on-demand"]["triggers"]
    assert trig["expect"] == ["posebatch.labeled.updated"]
    (rescore,) = deps["after-promotion"]["triggers"]
    assert rescore["expect"] == ["posebatch.model.promoted"] and rescore["enabled"] is False
    assert deps["after-promotion"]["parameters"]["since_days"] == 7
    assert project["pull"][0]["prefect.deployments.steps.set_working_directory"]


# --- the real thing ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def database():
    """PostgreSQL for the module's Prefect server; None (SQLite) where it cannot run."""
    from tests.support.postgres import missing, postgres

    why = missing()
    if why:
        import warnings

        warnings.warn(f"deployment tests on SQLite: {why}", stacklevel=1)
        yield None
        return
    with postgres() as url:
        yield url


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, database):
    """A Prefect server (on PostgreSQL), a data root with a registered model, and a process
    work pool."""
    tmp = tmp_path_factory.mktemp("e2e")
    data = tmp / "data"
    make_batches(data, batches=2, per_batch=5, seed=21)
    from tasks.synth.generate import generate_dataset

    generate_dataset(data, per_class=1, seed=21)          # a labeled/ folder for the event
    register_tiny_model(data / "registry")
    with_onnx(data / "registry", data / "registry")      # flow-run processes skip TensorFlow
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update(PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
                PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    if database:
        base["PREFECT_API_DATABASE_CONNECTION_URL"] = database
    server, env = start_server(tmp / "prefect", env=base, log=tmp / "server.log",
                               timeout=240)
    env.update(PREFECT_WORKER_QUERY_SECONDS="2", POSEBATCH_XLA="0")
    procs = Procs()
    try:
        yield {"tmp": tmp, "data": data, "env": env, "api": env["PREFECT_API_URL"],
               "procs": procs, "database": database}
    finally:
        procs.stop_all()
        stop_process(server)
    assert server.poll() is not None


@pytest.fixture(scope="module")
def deployed(site) -> str:
    """The process work pool and `prefect deploy --all` on prefect.yaml, once for the module
    (each is a Prefect CLI process of its own); returns the deploy's output. The serve test
    re-registers the deployments under `posebatch serve`, so it comes last in this file."""
    run(PREFECT + ["work-pool", "create", "posebatch", "--type", "process"], site["env"])
    return run(PREFECT + ["--no-prompt", "deploy", "--all"], site["env"],
               cwd=PROJECT_DIR).stdout


@pytest.mark.slow
def test_deploy_run_nightly_and_trigger_retraining(site, deployed: str):
    env, api, data, tmp = site["env"], site["api"], site["data"], site["tmp"]
    out = deployed
    assert "classify/nightly" in out and "retrain/on-demand" in out
    assert "rescore/after-promotion" in out
    nightly = deployment(api, "classify", "nightly")
    (sched,) = nightly["schedules"]
    assert sched["schedule"] == {**sched["schedule"], "cron": "0 2 * * *", "timezone": "UTC"}
    assert nightly["work_pool_name"] == "posebatch"

    worker = site["procs"].start(PREFECT + ["worker", "start", "--pool", "posebatch"], env,
                                 tmp / "worker.log", cwd=tmp)
    output = tmp / "output"
    res = run(PREFECT + ["deployment", "run", "classify/nightly",
                         "-p", f"input_dir={data / 'incoming'}", "-p", f"output_dir={output}",
                         "-p", f"registry_dir={data / 'registry'}", "-p", "batch_size=32",
                         "--watch", "--watch-timeout", "600"], env, timeout=660)
    assert "Completed" in res.stdout, res.stdout[-2000:]

    table = predictions(output)
    assert sorted(table.column("source_path").to_pylist()) == npy_files(data / "incoming")
    assert set(table.column("model_version").to_pylist()) == {"v0001"}
    (done,) = [r for r in flow_runs(api, "classify") if r["state_type"] == "COMPLETED"]
    assert set(table.column("flow_run_id").to_pylist()) == {done["id"]}

    # doctor sees the run through the API, and nothing left pending.
    report = json.loads(run(POSEBATCH + ["doctor", "--data", str(data), "--output", str(output),
                                         "--json"], env).stdout.strip().splitlines()[-1])
    assert report["prefect"]["last_classify_run"]["state"] == "COMPLETED"
    assert report["model"]["production"] == "v0001" and report["input"]["pending"] == 0
    assert report["last_run"]["files_processed"] == 10 and report["ok"], report["problems"]
    if site["database"]:  # the server kept its state in PostgreSQL, and doctor says so
        from tests.support.postgres import flow_runs_in

        assert ("classify", "COMPLETED") in flow_runs_in(site["database"])
        assert report["prefect"]["database"].startswith("postgresql+asyncpg://postgres@")

    # The event: with the worker stopped, the triggered run waits for us to inspect it.
    stop_process(worker)
    retrain = deployment(api, "retrain", "on-demand")
    assert flow_runs(api, "retrain") == []
    sent = json.loads(run(POSEBATCH + ["notify-labeled", "--data", str(data), "--json"],
                          env).stdout.strip().splitlines()[-1])
    assert sent["event"] == "posebatch.labeled.updated" and sent["files"] == 17
    runs = wait_for(lambda: flow_runs(api, "retrain", retrain["id"]), timeout=120)
    assert len(runs) == 1, "the trigger did not create a retraining run"
    assert runs[0]["parameters"]["labeled_dir"] == str((data / "labeled").resolve())
    assert runs[0]["parameters"]["registry_dir"] == str((data / "registry").resolve())
    run(PREFECT + ["flow-run", "cancel", runs[0]["id"]], env)
    state = wait_for(lambda: flow_runs(api, "retrain")[0]["state_type"] in ("CANCELLED",),
                     timeout=30)
    assert state


def automation(api: str, name: str) -> dict[str, Any]:
    resp = httpx.post(f"{api}/automations/filter", json={}, timeout=10)
    resp.raise_for_status()
    (found,) = [a for a in resp.json() if a["name"] == name]
    return found


@pytest.mark.slow
def test_a_promotion_event_runs_the_after_promotion_rescore(site, deployed: str):
    """Deployed with its trigger off; enabled as the README says; ``posebatch models
    promote`` emits ``posebatch.model.promoted`` and the worker re-scores the classified
    frames with the new version: one new row per frame, the old rows kept."""
    from models.network import build_cnn
    from models.registry import Registry
    from models.spec import class_names
    from tests.support.rescore_support import rows_by_version

    env, api, data, tmp = site["env"], site["api"], site["data"], site["tmp"]
    auto = automation(api, "rescore-after-promotion")
    assert auto["enabled"] is False                                     # off by default
    output = tmp / "rescore-output"
    registry = data / "registry"
    run(POSEBATCH + ["classify", "--input", str(data / "incoming"), "--output", str(output),
                     "--registry", str(registry), "--quiet-seconds", "0", "--json"], env)
    dep = deployment(api, "rescore", "after-promotion")
    httpx.patch(f"{api}/deployments/{dep['id']}", timeout=10, json={"parameters": {
        **dep["parameters"], "input_dir": str(data / "incoming"), "output_dir": str(output),
        "registry_dir": str(registry)}}).raise_for_status()
    httpx.patch(f"{api}/automations/{auto['id']}", json={"enabled": True},
                timeout=10).raise_for_status()
    new = Registry(registry).register(build_cnn(17, filters=(8, 8), dense=16),
                                      {"class_names": class_names(), "temperature": 1.0})
    with_onnx(registry, registry, [new.version])  # as a retrained version: on ONNX Runtime
    worker = site["procs"].start(PREFECT + ["worker", "start", "--pool", "posebatch"], env,
                                 tmp / "worker-rescore.log", cwd=tmp)
    sent = json.loads(run(POSEBATCH + ["models", "promote", new.version, "--registry",
                                       str(registry), "--json"], env
                          ).stdout.strip().splitlines()[-1])
    assert sent["event"] and sent["to"] == new.version

    def finished() -> list[dict[str, Any]]:
        return [r for r in flow_runs(api, "rescore", dep["id"])
                if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]

    runs = wait_for(finished, timeout=300, step=2)
    assert runs and runs[0]["state_type"] == "COMPLETED", (tmp / "worker-rescore.log"
                                                           ).read_text()[-3000:]
    assert runs[0]["parameters"]["model_version"] == new.version
    rows = rows_by_version(output)
    assert rows[new.version] == rows["v0001"] and len(rows["v0001"]) == 10
    stop_process(worker)


@pytest.mark.slow
def test_serve_registers_the_schedule_with_its_timezone(site):
    env, api, tmp = site["env"], site["api"], site["tmp"]
    data = tmp / "serve_data"
    (data / "incoming").mkdir(parents=True)
    proc = site["procs"].start(POSEBATCH + ["serve", "--data", str(data), "--timezone",
                                            "Europe/Berlin", "--cron", "30 1 * * *"],
                               env, tmp / "serve.log", cwd=tmp)

    def registered() -> dict[str, Any] | None:
        try:
            dep = deployment(api, "classify", "nightly")
        except httpx.HTTPStatusError:
            return None
        scheds = dep.get("schedules") or []
        return dep if scheds and scheds[0]["schedule"].get("timezone") == "Europe/Berlin" \
            else None

    dep = wait_for(registered, timeout=240, step=2)
    assert dep, (tmp / "serve.log").read_text()[-3000:]
    assert dep["schedules"][0]["schedule"]["cron"] == "30 1 * * *"
    assert dep["parameters"]["input_dir"] == str((data / "incoming").resolve())
    assert (data / "prefect" / "serve.json").is_file()

    def scheduled() -> list[dict[str, Any]]:
        return [r for r in flow_runs(api, "classify", dep["id"])
                if r["state_type"] == "SCHEDULED"]

    runs = wait_for(scheduled, timeout=120, step=2)
    assert runs, "the server's scheduler created no runs"
    for r in runs:                     # 01:30 in Berlin, whatever the UTC offset that day
        from datetime import datetime

        start = datetime.fromisoformat(r["expected_start_time"]).astimezone(
            ZoneInfo("Europe/Berlin"))
        assert (start.hour, start.minute) == (1, 30), r["expected_start_time"]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not (data / "prefect" / "serve.json").exists()
