"""``posebatch rescore`` as a real subprocess: killed after its second commit, then run
again: every frame has exactly one row of the new version; --dry-run and --json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.classify_support import make_input, with_onnx
from tests.support.rescore_support import rows_by_version, two_versions


@pytest.fixture()
def cli_env(prefect_server) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "POSEBATCH_XLA": "0", "POSEBATCH_CHUNK_FILES": "4",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("POSEBATCH_CRASH_AT", None)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args, "--json"]


@pytest.mark.slow
def test_a_rescore_killed_mid_run_resumes_and_writes_every_frame_once(
        cli_env: dict[str, str], onnx_registry_dir: Path, tmp_path: Path):
    """Both versions carry a verified model.onnx: the four processes run on ONNX Runtime and
    skip TensorFlow's import (tests/support/classify_support.py: with_onnx)."""
    reg, old, new = two_versions(onnx_registry_dir, tmp_path / "registry")
    with_onnx(reg, reg, [new])
    inp = make_input(tmp_path / "data", batches=2, per_batch=6)
    out = tmp_path / "out"
    where = ["--input", str(inp), "--output", str(out), "--registry", str(reg)]
    subprocess.run(cli("classify", *where, "--quiet-seconds", "0"), env=cli_env, check=True,
                   capture_output=True, timeout=300)
    dry = subprocess.run(cli("rescore", "--model", new, "--dry-run", *where), env=cli_env,
                         capture_output=True, text=True, timeout=300)
    plan = json.loads(dry.stdout.strip().splitlines()[-1])
    assert (plan["selected_files"], plan["missing"], plan["frames"]) == (12, 0, 0)
    killed = subprocess.run(cli("rescore", "--model", new, *where),
                            env={**cli_env, "POSEBATCH_CRASH_AT": "recorded:2"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = rows_by_version(out).get(new, [])
    assert 0 < len(partial) < 12           # two chunks of four were committed
    done = subprocess.run(cli("rescore", "--model", new, *where), env=cli_env,
                          capture_output=True, text=True, timeout=300)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert summary["already_scored"] + summary["rescored_files"] == 12
    rows = rows_by_version(out)
    assert rows[new] == rows[old] and len(set(rows[new])) == 12


def test_rescore_refuses_a_bad_day_and_an_unknown_version_in_one_line(
        cli_env: dict[str, str], registry_dir: Path, tmp_path: Path):
    for args, message in ((["--since", "yesterday"], "--since must be a day YYYY-MM-DD"),
                          (["--model", "v9999"], "no model version 'v9999'")):
        proc = subprocess.run(cli("rescore", "--registry", str(registry_dir),
                                  "--output", str(tmp_path / "out"), *args),
                              env=cli_env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_human_summary_names_the_engine():
    from flows.cli.rescore import _human

    summary = {"dry_run": False, "rescored_files": 3, "selected_files": 3, "missing": 0,
               "model_version": "v0002", "frames": 4, "selected_frames": 4,
               "already_scored": 0, "in_archive": 0, "skipped": {}, "engine": "onnx"}
    assert _human(summary).startswith("re-scored 3 file(s) with v0002 (4 frame(s)) on the "
                                      "onnx engine; ")
