"""`posebatch doctor`: the --json report's fields after a real classification run (model and
age, last run from the local Prefect database and the ledger, pending input, disk, versions),
exit code 1 with one-line problems when something is off (no data root, no model, a missing
model file, a failed last run), and that it only reads (a missing data root stays missing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.ops import make_batches, npy_files, register_tiny_model

POSEBATCH = [sys.executable, "-m", "flows.cli"]


def _env() -> dict[str, str]:
    """A user's environment: no Prefect home or API from the test session, so the commands
    use their defaults under the data root."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "POSEBATCH_")) and k != "DO_NOT_TRACK"}
    env["POSEBATCH_XLA"] = "0"
    return env


def _run(args: list[str], timeout: float = 300) -> tuple[int, dict, str]:
    res = subprocess.run(POSEBATCH + args, env=_env(), capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    lines = res.stdout.strip().splitlines()
    return res.returncode, json.loads(lines[-1]) if lines else {}, res.stderr


def doctor(data: Path) -> tuple[int, dict]:
    code, report, _ = _run(["doctor", "--data", str(data), "--json"], timeout=120)
    return code, report


def test_missing_data_root_is_reported_and_left_alone(tmp_path: Path):
    data = tmp_path / "nowhere"
    code, report = doctor(data)
    assert code == 1 and report["ok"] is False
    assert report["data_root"] == {"path": str(data.resolve()), "exists": False}
    assert any("does not exist" in p for p in report["problems"])
    assert any("no production model" in p for p in report["problems"])
    assert all("\n" not in p for p in report["problems"])          # one line each
    assert not data.exists()                                        # doctor only reads
    for key in ("python", "prefect", "keras", "pyarrow", "numpy"):
        assert report["versions"][key]
    assert report["prefect"]["telemetry"] == "off"


@pytest.mark.slow
def test_report_after_a_run_then_problems(tmp_path: Path):
    data = tmp_path / "data"
    make_batches(data, batches=2, per_batch=4, seed=51)
    version = register_tiny_model(data / "registry")
    code, summary, err = _run(["classify", "--data", str(data), "--quiet-seconds", "0",
                               "--json"])
    assert code == 0, err[-2000:]

    code, report = doctor(data)
    assert code == 0 and report["ok"] is True, report["problems"]
    assert report["data_root"] == {"path": str(data.resolve()), "exists": True}
    model = report["model"]
    assert model["production"] == version and model["versions"] == 1
    assert 0 <= model["age_days"] < 0.1 and model["classes"] > 2
    last = report["last_run"]
    assert last["files_processed"] == 8 and last["by_status"] == {"classified": 8}
    run = report["prefect"]["last_classify_run"]
    assert report["prefect"]["last_run_source"] == "local database"
    assert run["state"] == "COMPLETED" and run["id"] == summary["flow_run_id"]
    assert last["last_commit"]["flow_run_id"] == summary["flow_run_id"]
    assert report["prefect"]["home"] == str((data / "prefect").resolve())
    assert report["input"]["pending"] == 0 and report["input"]["ready"] == 8
    assert report["disk"]["data_root"]["free_gb"] > 0

    # New input arrives: pending, not a problem. Then the model file vanishes and a run fails.
    make_batches(tmp_path / "more", batches=1, per_batch=3, seed=52)
    (tmp_path / "more" / "incoming" / "batch_000").rename(data / "incoming" / "batch_new")
    model_file = next(p for p in (data / "registry").rglob("*.keras"))
    model_file.unlink()
    code, _, err = _run(["classify", "--data", str(data), "--quiet-seconds", "0", "--json"])
    assert code != 0
    code, report = doctor(data)
    assert code == 1 and report["ok"] is False
    assert report["input"]["pending"] == 3
    assert not any(p.startswith("backlog") for p in report["problems"])   # fresh: not late
    old = time.time() - 30 * 3600                   # the batch has waited 30 h: runs are late
    for p in (data / "incoming" / "batch_new").iterdir():
        os.utime(p, (old, old))
    code, report = doctor(data)
    assert report["input"]["backlog"]["oldest_batch"] == "batch_new"
    assert any(p.startswith("backlog: 3 file(s) waiting, the oldest batch batch_new for 30")
               for p in report["problems"]), report["problems"]
    assert any(p.startswith("model file missing") for p in report["problems"]), report
    assert report["prefect"]["last_classify_run"]["state"] in ("FAILED", "CRASHED")
    assert any(p.startswith("last classification run") for p in report["problems"])
    assert npy_files(data / "incoming")[-1].startswith("batch_new/")


def test_a_missing_or_damaged_output_part_is_a_problem(tmp_path: Path):
    """Before: doctor said ok with a committed part deleted (the ledger still claimed its
    rows). Now each missing or unreadable part is one problem line and the exit code is 1."""
    from tasks.classify.ledger import Ledger
    from tests.tasks.classify.test_verify import commit

    data = tmp_path / "data"
    register_tiny_model(data / "registry")
    led = Ledger.load(str(data / "output"))
    kept = commit(led, {"b/1.npy": b"one", "b/2.npy": None}, "c1")
    gone = commit(led, {"b/3.npy": b"three"}, "c2", {"b/3.npy": 4})
    code, report = doctor(data)
    assert code == 0 and report["ok"] is True, report["problems"]
    assert report["last_run"]["parts_checked"] == 3
    (data / "output" / gone.parts[0].final).unlink()
    (data / "output" / kept.parts[1].final).write_bytes(b"garbage")     # the rejections part
    code, report = doctor(data)
    assert code == 1 and report["ok"] is False
    lines = [p for p in report["problems"] if "part" in p]
    assert len(lines) == 2 and all("\n" not in p for p in lines)
    assert lines[0].startswith(f"missing part {gone.parts[0].final}: 4 row(s)")
    assert lines[1].startswith(f"unreadable part {kept.parts[1].final}")


def test_doctor_names_prefects_database_with_the_password_masked(tmp_path, monkeypatch):
    from flows.runtime.doctor import prefect_database

    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    assert prefect_database(tmp_path, None) == f"sqlite ({tmp_path / 'prefect.db'})"
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL",
                       "postgresql+asyncpg://prefect:s3cret@10.0.0.5:5432/prefect")
    shown = prefect_database(tmp_path, None)
    assert shown == "postgresql+asyncpg://prefect:***@10.0.0.5:5432/prefect"
