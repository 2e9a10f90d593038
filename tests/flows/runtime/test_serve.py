"""`posebatch serve`: the deployments it registers (from prefect.yaml), their schedule with its
timezone, the retraining trigger, and clear errors for a bad schedule. (Serving for real
against a Prefect server is in test_deployments.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.runtime.serve import build_deployments, check_schedule, load_project, plan_deployments
from flows.settings import Settings


@pytest.fixture
def berlin(tmp_path: Path) -> Settings:
    return Settings(data_root=tmp_path / "root", timezone="Europe/Berlin",
                    nightly_cron="30 1 * * *", batch_size=128)


def test_plans_take_schedule_and_paths_from_settings(berlin: Settings):
    plans = {p.name: p for p in plan_deployments(berlin)}
    assert set(plans) == {"nightly", "on-demand", "after-promotion"}
    nightly, retrain = plans["nightly"], plans["on-demand"]
    assert nightly.schedules == [{"cron": "30 1 * * *", "timezone": "Europe/Berlin"}]
    root = berlin.data_root.resolve()
    assert nightly.parameters == {"input_dir": str(root / "incoming"),
                                  "output_dir": str(root / "output"),
                                  "registry_dir": str(root / "registry"), "batch_size": 128}
    assert nightly.entrypoint.endswith("flows/classify.py:classify_flow")
    assert Path(nightly.entrypoint.rsplit(":", 1)[0]).is_file()
    assert nightly.concurrency_limit == 1
    assert retrain.schedules == [] and len(retrain.triggers) == 1
    trig = retrain.triggers[0]
    assert trig["expect"] == ["posebatch.labeled.updated"]
    # The event's fallback paths point under the served data root, not the checkout's data/.
    assert repr(str(root / "labeled")) in trig["parameters"]["labeled_dir"]
    assert "event.payload.labeled_dir" in trig["parameters"]["labeled_dir"]
    # Re-scoring after a promotion: served under the same data root, its trigger off.
    rescore = plans["after-promotion"]
    assert rescore.parameters == {"input_dir": str(root / "incoming"),
                                  "output_dir": str(root / "output"),
                                  "registry_dir": str(root / "registry"), "since_days": 7,
                                  "lock_wait_seconds": 3600}
    (trig,) = rescore.triggers
    assert trig["enabled"] is False and trig["expect"] == ["posebatch.model.promoted"]
    assert repr(str(root / "registry")) in trig["parameters"]["registry_dir"]


def test_built_deployments_keep_the_timezone(berlin: Settings):
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    deps = {d.name: d for d in build_deployments(plan_deployments(berlin))}
    nightly, retrain = deps["nightly"], deps["on-demand"]
    assert nightly.flow_name == "classify" and retrain.flow_name == "retrain"
    (sched,) = nightly.schedules
    assert isinstance(sched.schedule, CronSchedule)
    assert sched.schedule.cron == "30 1 * * *" and sched.schedule.timezone == "Europe/Berlin"
    assert nightly.parameters["batch_size"] == 128
    assert retrain.schedules == [] or retrain.schedules is None
    (trig,) = retrain.triggers
    assert isinstance(trig, DeploymentEventTrigger)
    assert trig.expect == {"posebatch.labeled.updated"}


def test_default_settings_agree_with_prefect_yaml(tmp_path: Path):
    """serve (settings) and `prefect deploy` (prefect.yaml) schedule the same night."""
    defaults = Settings(data_root=tmp_path)
    (nightly,) = [d for d in load_project()["deployments"] if d["name"] == "nightly"]
    (yaml_sched,) = nightly["schedules"]
    (plan,) = [p for p in plan_deployments(defaults) if p.name == "nightly"]
    assert plan.schedules == [{"cron": yaml_sched["cron"], "timezone": yaml_sched["timezone"]}]
    assert (defaults.nightly_cron, defaults.timezone) == ("0 2 * * *", "UTC")


def test_bad_schedules_are_one_line_errors():
    check_schedule("0 2 * * *", "Europe/Berlin")
    with pytest.raises(ValueError, match="unknown timezone"):
        check_schedule("0 2 * * *", "Mars/Olympus")
    with pytest.raises(ValueError, match="invalid cron"):
        check_schedule("every night", "UTC")

    from flows.cli import app

    res = CliRunner().invoke(app, ["serve", "--timezone", "Mars/Olympus"])
    assert res.exit_code == 2
    assert "unknown timezone 'Mars/Olympus'" in res.output
    assert "Traceback" not in res.output
