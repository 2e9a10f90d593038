"""The watcher: complete batches are classified once, half-written ones are not, a restart
redoes nothing, and SIGTERM stops `posebatch watch` after the current run, losing nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flows.runtime.watch import Watcher, classify_runner, ledger_entries
from tests.support.ops import (
    make_batches,
    move_batch_in,
    npy_files,
    predictions,
    register_tiny_model,
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reg = tmp_path_factory.mktemp("watch_registry")
    register_tiny_model(reg)
    return reg


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated batches to publish into watched folders (copied per test)."""
    return make_batches(tmp_path_factory.mktemp("watch_src"), batches=3, per_batch=6, seed=11)


def _copy_batch(batches: Path, name: str, dst_parent: Path) -> Path:
    import shutil

    dst = dst_parent / name
    shutil.copytree(batches / name, dst)
    return dst


def _wait(cond, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def test_decisions_follow_the_readiness_rule(tmp_path: Path, batches: Path):
    """No flow here: the watcher's own decisions, driven by the real discovery rule."""
    inp = tmp_path / "in"
    inp.mkdir()
    calls: list[float] = []
    w = Watcher(inp, lambda: calls.append(time.time()) or {"ok": True}, quiet_seconds=30)
    assert w.check() == 30.0 and calls == []                     # empty: nothing to do

    move_batch_in(_copy_batch(batches, "batch_000", tmp_path / "stage"), inp)
    w.check()
    assert len(calls) == 1                                      # complete: one run
    w.check()
    assert len(calls) == 1                                      # not twice

    half = _copy_batch(batches, "batch_001", tmp_path / "stage")
    (half / "_SUCCESS").unlink()
    move_batch_in(half, inp)
    delay = w.check()
    assert len(calls) == 1 and delay <= 15                      # waits, looks again soon
    (inp / "batch_001" / "_SUCCESS").write_bytes(b"")
    w.check()
    assert len(calls) == 2                                      # marker arrived: classified

    def failing_run() -> dict:
        raise RuntimeError("another posebatch run is writing to the output")

    w2 = Watcher(inp, failing_run, quiet_seconds=30)
    w2.check()
    assert w2.stats.failed_runs == 1 and w2.stats.runs == []
    w2.check()
    assert w2.stats.failed_runs == 2                            # retried at the next look


def test_watcher_classifies_a_complete_batch_once_and_not_a_half_written_one(
        prefect_server, tmp_path: Path, registry: Path, batches: Path):
    inp, out = tmp_path / "incoming", tmp_path / "output"
    inp.mkdir()
    params = {"input_dir": str(inp), "output_dir": str(out), "registry_dir": str(registry),
              "quiet_seconds": 30.0, "batch_size": 32}
    watcher = Watcher(inp, classify_runner(params), quiet_seconds=30.0, poll_seconds=60,
                      known=lambda: ledger_entries(str(out)))
    thread = threading.Thread(target=watcher.watch, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        assert watcher.stats.mode == "notify" and watcher.stats.runs == []
        move_batch_in(_copy_batch(batches, "batch_000", tmp_path / "stage"), inp)
        assert _wait(lambda: len(watcher.stats.runs) == 1, timeout=240), watcher.stats

        # A half-written batch: no marker, still changing while we watch.
        half = inp / "batch_001"
        half.mkdir()
        src = sorted((batches / "batch_001").glob("*.npy"))
        for i, f in enumerate(src * 2):
            (half / f.name).write_bytes(f.read_bytes()[: 100 + i * 1000])
            time.sleep(0.4)
        time.sleep(1.5)
        assert len(watcher.stats.runs) == 1 and watcher.stats.failed_runs == 0
        assert watcher.stats.wakeups >= 3          # it did look at the changes
    finally:
        watcher.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()

    table = predictions(out)
    expected = npy_files(inp / "batch_000")
    got = sorted(table.column("source_path").to_pylist())
    assert got == sorted(f"batch_000/{p}" for p in expected)      # every frame exactly once
    assert watcher.stats.runs[0]["files"] == len(expected)

    # A restarted watcher learns from the ledger that batch_0 is done: no run at all.
    def must_not_run() -> dict:
        raise AssertionError("restarted watcher re-ran a processed batch")

    again = Watcher(inp, must_not_run, quiet_seconds=30.0,
                    known=lambda: ledger_entries(str(out)))
    again.check()
    assert again.stats.runs == [] and again.stats.failed_runs == 0


def test_a_file_the_run_skipped_is_handed_to_the_next_run(tmp_path: Path, batches: Path):
    import pyarrow as pa

    from tasks.classify.discover import scan_input

    inp = tmp_path / "in"
    inp.mkdir()
    _copy_batch(batches, "batch_000", inp)
    ready = scan_input(str(inp), 0.0).ready
    skipped = ready[0].path  # e.g. unreadable during the run: not in the ledger afterwards
    ledger: list = []

    def known() -> pa.Table:
        return pa.table({"path": [c.path for c in ledger], "size": [c.size for c in ledger],
                         "mtime_ns": [c.mtime_ns for c in ledger]},
                        schema=pa.schema([("path", pa.string()), ("size", pa.int64()),
                                          ("mtime_ns", pa.int64())]))

    def run() -> dict:
        ledger[:] = [c for c in scan_input(str(inp), 0.0).ready if c.path != skipped]
        return {}

    w = Watcher(inp, run, quiet_seconds=0, known=known, force_polling=True)
    w.check()
    assert len(w.stats.runs) == 1 and w.stats.runs[0]["files"] == len(ready)
    w.check()  # only the skipped file is new: another run
    assert len(w.stats.runs) == 2 and w.stats.runs[1]["files"] == 1
    skipped = None  # now readable: the run records it
    w.check()
    w.check()
    assert len(w.stats.runs) == 3  # it was taken once more, and then never again


def test_polling_fallback(tmp_path: Path, batches: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    calls: list[int] = []
    w = Watcher(inp, lambda: calls.append(1) or {}, quiet_seconds=30, poll_seconds=0.2,
                force_polling=True)
    thread = threading.Thread(target=w.watch, daemon=True)
    thread.start()
    move_batch_in(_copy_batch(batches, "batch_002", tmp_path / "stage"), inp)
    assert _wait(lambda: len(calls) == 1, timeout=20)
    time.sleep(1.0)
    w.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and w.stats.mode == "poll" and len(calls) == 1


@pytest.mark.slow
def test_sigterm_stops_after_the_current_run(tmp_path: Path, registry: Path, batches: Path):
    data, inp, out = tmp_path / "data", tmp_path / "data" / "incoming", tmp_path / "out"
    inp.mkdir(parents=True)
    for name in ("batch_000", "batch_001"):
        _copy_batch(batches, name, inp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env["POSEBATCH_XLA"] = "0"  # skip the XLA compile: this test is about stopping
    env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"  # the run's end is read from its log
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "watch", "--input", str(inp), "--output", str(out),
         "--registry", str(registry), "--data", str(data), "--json", "--batch-size", "32"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    lines: list[str] = []
    finished: list[float] = []

    def read() -> None:
        for line in iter(proc.stderr.readline, ""):
            lines.append(line)
            if "Flow run" in line and "Finished in state" in line:
                finished.append(time.monotonic())

    try:
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert _wait(lambda: any("starting a classification run" in x for x in lines), 180), \
            "".join(lines)[-3000:]
        proc.send_signal(signal.SIGTERM)                 # mid-run
        stdout = proc.stdout.read()
        proc.wait(timeout=240)
        exited = time.monotonic()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, "".join(lines)[-3000:]
    # Promptly once the run is over (the temporary server outlives Prefect's last flush;
    # stopped before it, the exit took over a minute of retries).
    reader.join(timeout=10)
    assert finished and exited - finished[-1] < 30, "".join(lines)[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["runs"] == 1 and result["failed_runs"] == 0
    got = sorted(predictions(out).column("source_path").to_pylist())
    assert got == npy_files(inp)                          # the run finished: nothing lost


@pytest.mark.slow
def test_watch_one_server_ctrl_c_and_kill(tmp_path: Path, registry: Path):
    """As for serve (test_serving.py): each watch in its own process group, as a terminal
    runs it; one server, a second watch on the data root refused naming the first, Ctrl-C to
    the group ends everything, a killed watch leaves no server."""
    from flows.runtime.claim import holder
    from tests.support.processes import Command, alive, servers_using, wait_until

    data = tmp_path / "data"
    (data / "incoming").mkdir(parents=True)
    home = (data / "prefect").resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    args = ["watch", "--data", str(data), "--registry", str(registry)]
    started: list[Command] = []

    def watch() -> Command:
        started.append(Command(args, env, cwd=tmp_path))
        return started[-1]

    try:
        first = watch()
        assert first.wait_for("watching", 120), first.output[-3000:]
        (server,) = first.servers()
        assert servers_using(home) == [server]

        second = watch()
        assert second.finish(60) == 3, second.output
        assert second.output.count("\n") == 1 and f"PID {first.pid}" in second.output

        t0 = time.monotonic()
        first.signal_group(signal.SIGINT)
        assert first.finish(15) in (0, 130), first.output[-3000:]
        assert wait_until(lambda: not alive(server), 15 - (time.monotonic() - t0))
        assert "Traceback" not in first.output and holder(home) is None

        again = watch()
        assert again.wait_for("watching", 120), again.output[-3000:]
        (server,) = again.servers()
        os.kill(again.pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(server), 15), "orphaned Prefect server"
        assert servers_using(home) == []
        # the lock goes with the last process holding it (a loaded machine reaps slowly)
        assert wait_until(lambda: holder(home) is None, 15), holder(home)
    finally:
        for cmd in started:
            cmd.kill()
