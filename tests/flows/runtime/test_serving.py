"""`posebatch serve` under an operator's hands, with real processes, each command in its own
process group as a terminal runs it: exactly one Prefect server, a second serve on the same
data root refused naming the first, Ctrl-C to the group stopping everything in seconds with
the deployments paused, and no server left behind when serve is killed. The pieces (claim,
parent-death wrapper, second Ctrl-C, pause) get fast tests of their own."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.runtime.claim import Busy, claim, holder
from flows.runtime.processes import free_port, guarded
from flows.runtime.serving import pause
from tests.support.processes import ROOT, Command, alive, servers_using, wait_until

STOP_WITHIN = 15.0  # the bound the README promises for Ctrl-C and for a killed serve


def _env() -> dict[str, str]:
    """The environment of a user's shell: no Prefect settings, telemetry off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _serve(data: Path, port: int) -> Command:
    return Command(["serve", "--data", str(data), "--port", str(port)], _env(), cwd=data.parent)


# --- the pieces, fast ----------------------------------------------------------------------

def test_a_claim_is_exclusive_and_lasts_as_long_as_the_server(tmp_path: Path):
    first = claim(tmp_path, "serve")
    first.record(server_pid=None, api_url="http://127.0.0.1:1/api")
    with pytest.raises(Busy, match=rf"posebatch serve \(PID {os.getpid()}\).*kill {os.getpid()}"):
        claim(tmp_path, "watch")
    assert holder(tmp_path).command == "serve"
    # Handed to a child (as the server gets it): our release does not free it; its exit does.
    child = subprocess.Popen(["sleep", "30"], pass_fds=(first.fd,))
    first.release()
    try:
        assert holder(tmp_path) is not None
    finally:
        child.kill()
        child.wait()
    assert holder(tmp_path) is None
    claim(tmp_path, "serve").release()


def test_a_guarded_child_dies_with_its_parent(tmp_path: Path):
    """The parent is SIGKILLed: no cleanup code of its own runs, the kernel signals the child."""
    script = ("import subprocess, sys\n"
              "from flows.runtime.processes import guarded\n"
              "p = subprocess.Popen(guarded(['/bin/sleep', '60']))\n"
              "print(p.pid, flush=True)\n"
              "sys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    child = int(parent.stdout.readline())
    try:
        assert wait_until(lambda: "sleep" in Path(f"/proc/{child}/cmdline").read_text(), 5)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: not alive(child), 5), "the child outlived its parent"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
    assert guarded(["/bin/true"])[-1] == "/bin/true"


def test_pausing_against_a_dead_server_is_skipped_in_one_line():
    started = time.monotonic()
    line = pause(f"http://127.0.0.1:{free_port()}/api", ["0b5e6c1a-0000-4000-8000-000000000000"])
    assert line.startswith("deployments not paused: the Prefect server at")
    assert "\n" not in line and time.monotonic() - started < 5


def test_a_second_signal_stops_at_once(tmp_path: Path):
    """serving.Shutdown in a real process: the first SIGINT asks the serving loop to stop (an
    orderly stop that here never ends), the second kills the server and exits 130 at once."""
    script = ("import asyncio, subprocess\n"
              "from flows.runtime.processes import kill_now\n"
              "from flows.runtime.serving import Shutdown\n"
              "server = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
              "shutdown = Shutdown(hard_stop=lambda: kill_now(server))\n"
              "shutdown.install()\n"
              "async def main():\n"
              "    stop = shutdown.attach()\n"
              "    print(server.pid, flush=True)\n"
              "    await stop.wait()\n"
              "    print('orderly stop', flush=True)\n"
              "    await asyncio.sleep(60)\n"
              "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    server = int(proc.stdout.readline())
    try:
        proc.send_signal(signal.SIGINT)
        assert "SIGINT received" in proc.stdout.readline()
        assert proc.stdout.readline().strip() == "orderly stop"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 130 and time.monotonic() - t0 < 2
        assert wait_until(lambda: not alive(server), 5)
        assert "Traceback" not in proc.stdout.read()
    finally:
        proc.kill()
        if alive(server):
            os.kill(server, signal.SIGKILL)


def test_a_bad_cron_is_refused_before_any_server_starts(tmp_path: Path):
    data = tmp_path / "data"
    cmd = Command(["serve", "--data", str(data), "--port", str(free_port()), "--cron",
                   "every night"], _env(), cwd=tmp_path)
    try:
        assert cmd.finish(60) == 2
        assert cmd.output.startswith("error: invalid cron expression 'every night'")
        assert cmd.output.count("\n") == 1
        assert not (data / "prefect" / "server.log").exists()   # no server was launched
        assert holder((data / "prefect").resolve()) is None
    finally:
        cmd.kill()


# --- the real thing ------------------------------------------------------------------------

def _paused(home: Path) -> dict[str, bool]:
    with sqlite3.connect(home / "prefect.db") as db:
        return {name: bool(p) for name, p in db.execute("SELECT name, paused FROM deployment")}


@pytest.mark.slow
def test_serve_one_server_ctrl_c_and_kill(tmp_path: Path, registry_dir: Path):
    """One serve start-up shared by every check but the kill, which restarts serve on the same
    data root (its database already migrated: the quick start an operator gets too)."""
    data, port = tmp_path / "data", free_port()
    home = (data / "prefect").resolve()
    started: list[Command] = []
    try:
        first = _serve_started(data, port, started)
        # Exactly one server: below serve, and on this data root anywhere on the machine.
        (server,) = first.servers()
        assert servers_using(home) == [server], first.output[-2000:]
        assert "temporary server" not in first.output

        # A second serve on the same port and data root: one line naming the first, no server.
        second = _serve(data, port)
        started.append(second)
        assert second.finish(30) == 3, second.output
        assert second.output.count("\n") == 1 and f"PID {first.pid}" in second.output
        assert servers_using(home) == [server]

        # watch on the same data root uses serve's server: still one server on the database.
        (data / "incoming").mkdir()
        shared = Command(["watch", "--data", str(data), "--registry", str(registry_dir)],
                         _env(), cwd=tmp_path)
        started.append(shared)
        assert shared.wait_for("watching", 120), shared.output[-3000:]
        assert f"using the Prefect server of posebatch serve (PID {first.pid}" in shared.output
        assert shared.servers() == [] and servers_using(home) == [server]
        shared.signal_group(signal.SIGINT)
        assert shared.finish(STOP_WITHIN) == 0, shared.output[-3000:]

        # Ctrl-C to the whole group: paused, server stopped, exit 0, no traceback.
        t0 = time.monotonic()
        first.signal_group(signal.SIGINT)
        assert first.finish(STOP_WITHIN) in (0, 130), first.output[-3000:]
        assert wait_until(lambda: not alive(server), STOP_WITHIN - (time.monotonic() - t0))
        assert "Traceback" not in first.output, first.output[-3000:]
        assert "paused 3 deployment(s)" in first.output
        assert _paused(home) == {"nightly": True, "on-demand": True, "after-promotion": True}
        assert not (home / "serve.json").exists() and holder(home) is None

        # Restarted, serve serves again (unpaused); killed alone, it leaves no server behind.
        again = _serve_started(data, port, started)
        assert not any(_paused(home).values())
        (server,) = again.servers()
        os.kill(again.pid, signal.SIGKILL)        # no handler, no cleanup of its own runs
        assert wait_until(lambda: not alive(server), STOP_WITHIN), "orphaned Prefect server"
        assert servers_using(home) == []
        # the lock goes with the last process holding it (a loaded machine reaps slowly)
        assert wait_until(lambda: holder(home) is None, STOP_WITHIN), holder(home)
    finally:
        for cmd in started:
            cmd.kill()


def _serve_started(data: Path, port: int, started: list[Command]) -> Command:
    cmd = _serve(data, port)
    started.append(cmd)
    assert cmd.wait_for("being served", 120), cmd.output[-3000:]
    return cmd
