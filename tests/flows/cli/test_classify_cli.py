"""``posebatch classify`` / ``compact`` as real subprocesses: SIGKILL at many points, then
every valid frame is in the output exactly once; the lock's message; compaction.

The crash, resume and full-disk tests use ``onnx_registry_dir`` (tests/conftest.py): the
session's model with a verified model.onnx, so each fresh process runs on ONNX Runtime, as a
retrained version does, and skips TensorFlow's import (about 8 s of CPU a process on Keras).
The nothing-new test keeps the Keras-only model: that such a run never imports TensorFlow
proves something only when classifying would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tasks.classify.ledger import COMMITS, STAGING, Ledger, OutputLock
from tests.support.classify_support import (
    bad_files,
    good_frames,
    make_input,
    npy_bytes,
    write,
)


@pytest.fixture()
def cli_env(prefect_server, tmp_path: Path) -> dict[str, str]:
    """Subprocesses use the session's Prefect API (no server start-up per run)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "POSEBATCH_XLA": "0",  # compile time does not matter to what is tested here
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("POSEBATCH_CRASH_AT", None)
    return env


def classify_cmd(inp: Path, out: Path, registry: Path) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "classify", "--input", str(inp), "--output",
            str(out), "--registry", str(registry), "--batch-size", "4", "--chunk-files", "5",
            "--quiet-seconds", "0", "--json"]


def expected_frames(inp: Path) -> list[tuple[str, int]]:
    keys = []
    for p in sorted(inp.rglob("*.npy")):
        rel = p.relative_to(inp).as_posix()
        if rel.startswith("bad/"):
            continue
        keys += [(rel, k) for k in range(3 if p.name == "multi.npy" else 1)]
    return sorted(keys)


@pytest.mark.slow
def test_sigkill_at_any_point_then_rerun_gives_every_frame_exactly_once(
        cli_env: dict[str, str], onnx_registry_dir: Path, tmp_path: Path):
    inp = make_input(tmp_path / "data", batches=2, per_batch=12)
    write(inp / "batch_000" / "multi.npy", npy_bytes(good_frames(3)))
    bad = bad_files()
    for reason in ("truncated", "non_finite", "not_npy"):
        write(inp / "bad" / f"{reason}.npy", bad[reason])
    out = tmp_path / "out"
    cmd = classify_cmd(inp, out, onnx_registry_dir)
    # Kill points: inside a model batch, after staging, right after the commit record (the
    # commit point), between the renames of one commit's parts.
    for point in ("batch:3", "staged:2", "recorded:1", "finalized:1"):
        proc = subprocess.run(cmd, env={**cli_env, "POSEBATCH_CRASH_AT": point},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-2000:])
        led = Ledger.load(str(out))
        staged = {p.name for p in (out / STAGING).iterdir()} if (out / STAGING).exists() else set()
        if point.startswith("staged"):      # parts written, no record: to be discarded
            assert staged - {r.commit_id for r in led.records}
        if point.startswith("recorded"):    # committed, part not in place: to roll forward
            assert any((out / part.staged).exists() for r in led.records for part in r.parts)
    # And once by the clock: killed as soon as this run writes a commit record of its own.
    def records() -> set[str]:
        return {p.name for p in (out / COMMITS).glob("c-*.json")} if (out / COMMITS).is_dir() \
            else set()

    before = records()
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline:
            if records() - before:
                break
            time.sleep(0.02)
        killed_mid_run = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert killed_mid_run and records() - before, "the run ended before its first commit"
    final = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["engine"] == "onnx"

    preds = ds.dataset(out / "predictions", partitioning="hive").to_table()
    got = sorted(zip(preds.column("source_path").to_pylist(),
                     preds.column("frame_index").to_pylist(), strict=True))
    assert got == expected_frames(inp)                      # no loss, no duplicate
    rej = ds.dataset(out / "rejections", partitioning="hive").to_table()
    assert sorted(rej.column("source_path").to_pylist()) == [
        "bad/non_finite.npy", "bad/not_npy.npy", "bad/truncated.npy"]
    paths = Ledger.load(str(out)).entries.column("path").to_pylist()
    assert sorted(paths) == sorted(p.relative_to(inp).as_posix() for p in inp.rglob("*.npy"))
    assert not any((out / STAGING).iterdir()) if (out / STAGING).exists() else True

    again = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout.strip().splitlines()[-1])["new"] == 0

    # Compaction: one part per day and dataset afterwards, the same rows.
    parts_before = len(list((out / "predictions").rglob("*.parquet")))
    assert parts_before > 1
    comp = subprocess.run([sys.executable, "-m", "flows.cli", "compact", "--output", str(out),
                           "--json"], env=cli_env, capture_output=True, text=True, timeout=120)
    assert comp.returncode == 0, comp.stderr
    res = json.loads(comp.stdout.strip().splitlines()[-1])
    assert res["parts_before"] >= parts_before and res["partitions"] >= 1
    assert len(list((out / "predictions").rglob("*.parquet"))) == 1
    after = ds.dataset(out / "predictions", partitioning="hive").to_table()
    assert sorted(zip(after.column("source_path").to_pylist(),
                      after.column("frame_index").to_pylist(), strict=True)) == got


@pytest.mark.slow
def test_cli_refuses_a_locked_output_with_one_line(cli_env: dict[str, str], registry_dir: Path,
                                                   tmp_path: Path):
    inp = make_input(tmp_path / "data", batches=1, per_batch=2)
    out = tmp_path / "out"
    with OutputLock(str(out)):
        proc = subprocess.run(classify_cmd(inp, out, registry_dir), env=cli_env,
                              capture_output=True, text=True, timeout=120)
        comp = subprocess.run([sys.executable, "-m", "flows.cli", "compact", "--output",
                               str(out)], env=cli_env, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: another posebatch run is writing")
    assert f"pid {os.getpid()}" in lines[0]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is False
    assert comp.returncode == 3 and "another posebatch run" in comp.stderr
    missing = subprocess.run(classify_cmd(tmp_path / "nope", out, registry_dir), env=cli_env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    remote = subprocess.run(classify_cmd(tmp_path / "nope", out, registry_dir)[:-1] + [
        "--input", "s3://bucket/incoming", "--move-processed", str(tmp_path / "done")],
        env=cli_env, capture_output=True, text=True, timeout=120)
    assert remote.returncode == 2
    assert remote.stderr.strip() == "error: --move-processed works on local input folders only"


def frames_of(out: Path) -> list[tuple[str, int]]:
    if not (out / "predictions").exists():
        return []
    preds = ds.dataset(out / "predictions", partitioning="hive").to_table()
    return sorted(zip(preds.column("source_path").to_pylist(),
                      preds.column("frame_index").to_pylist(), strict=True))


def killed(cmd: list[str], env: dict[str, str], point: str) -> None:
    proc = subprocess.run(cmd, env={**env, "POSEBATCH_CRASH_AT": point}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-2000:])


@pytest.mark.slow
def test_sigkill_inside_ledger_folding_and_compaction_then_rerun_gives_every_frame_once(
        cli_env: dict[str, str], onnx_registry_dir: Path, tmp_path: Path):
    """Killed between a fold's segment and the removal of its records (in classify), between
    compaction's merged part and the removal of the parts it replaces, and between the merge
    of the ledger's segments and the removal of the old ones: every frame once after."""
    from tasks.classify.verify import verify

    inp = make_input(tmp_path / "data", batches=1, per_batch=17)
    out = tmp_path / "out"
    cmd = classify_cmd(inp, out, onnx_registry_dir)
    cmd[cmd.index("--chunk-files") + 1] = "1"         # 17 commits: the run folds (16+)
    compact = [sys.executable, "-m", "flows.cli", "compact", "--output", str(out), "--json"]
    want = expected_frames(inp)

    killed(cmd, cli_env, "fold:written")
    assert len(list((out / COMMITS).glob("c-*.json"))) == 17          # records not removed
    assert list((out / "_posebatch/ledger/segments").glob("s-*.parquet"))  # segment written
    assert Ledger.load(str(out)).entries.num_rows == 17               # folded once, not twice
    assert frames_of(out) == want

    killed(compact, cli_env, "compact:removing")   # merged part in place, old parts not gone
    assert len(frames_of(out)) == 2 * len(want)    # what a reader could see at that instant
    killed(compact, cli_env, "fold:merged")        # reconciled; killed folding the moves
    assert frames_of(out) == want

    final = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["new"] == 0 and summary["lost_parts"] == 0
    assert frames_of(out) == want
    led = Ledger.load(str(out))
    assert sorted(led.entries.column("path").to_pylist()) == sorted(k for k, _ in want)
    assert verify(led).problems == []                 # entries point at the merged part
    assert len(list((out / "predictions").rglob("*.parquet"))) == 1


@pytest.mark.slow
def test_a_full_disk_during_a_commit_fails_in_one_line_and_leaves_nothing_half_done(
        cli_env: dict[str, str], onnx_registry_dir: Path, tmp_path: Path):
    """RLIMIT_FSIZE (SIGXFSZ ignored) makes writing the Parquet part fail with EFBIG, like a
    full disk: the run exits 2 with one line naming the cause, no row and no ledger entry is
    committed, and a run without the limit gives every frame once. The Prefect API is the
    session's server (PREFECT_API_URL), so the limit hits only what the run itself writes:
    the part (about 5 KB and more) is over it, the commit record and lock file are not."""
    import resource

    inp = make_input(tmp_path / "data", batches=1, per_batch=3)
    out = tmp_path / "out"
    cmd = classify_cmd(inp, out, onnx_registry_dir)
    limit = 3000

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**cli_env, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=small_files)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "File too large" in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is False
    assert frames_of(out) == []                                      # no partial rows
    led = Ledger.load(str(out))
    assert led.entries.num_rows == 0 and led.records == []           # nothing committed
    assert led.reconcile()["missing_parts"] == 0

    final = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert frames_of(out) == expected_frames(inp)
    assert not any((out / STAGING).iterdir())


def test_a_run_with_nothing_new_starts_neither_prefect_nor_tensorflow(
        cli_env: dict[str, str], registry_dir: Path, tmp_path: Path):
    inp = make_input(tmp_path / "data", batches=1, per_batch=4)
    out = tmp_path / "out"
    cmd = classify_cmd(inp, out, registry_dir)
    runs = [subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first["classified"] == 4 and first["flow_run_id"]
    assert second["ok"] and second["flow_run_id"] is None        # no flow run: nothing to do
    assert (second["already_processed"], second["new"]) == (4, 0)
    assert second["tensorflow_imported"] is False


def test_an_engine_the_version_cannot_run_is_refused_in_one_line(registry_dir: Path,
                                                                tmp_path: Path):
    """--engine onnx on a version without a verified model.onnx (the shared registry's) and
    an unknown engine fail before any start-up cost, exit 2, never run on Keras instead."""
    from typer.testing import CliRunner

    from flows.cli import app

    (tmp_path / "in").mkdir()
    base = ["classify", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--registry", str(registry_dir), "--data", str(tmp_path), "--json"]
    for engine, words in (("onnx", "cannot run on onnx: no ONNX file recorded"),
                          ("tflite", "unknown engine 'tflite'")):
        res = CliRunner().invoke(app, [*base, "--engine", engine])
        assert res.exit_code == 2 and words in res.output, res.output
        assert json.loads(res.stdout.strip().splitlines()[-1])["ok"] is False
    assert not (tmp_path / "out").exists()
