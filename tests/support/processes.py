"""Real processes for the stop-and-crash tests: a posebatch command in its own process group
(as a terminal runs it), its output read as it comes, and the Prefect servers below it found
in /proc (Linux), so a test counts servers and sees whether one outlived its command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import flows

ROOT = Path(flows.__file__).resolve().parents[1]   # this checkout, not an installed copy
SERVER_MARKS = ("prefect server start", "prefect.server.api.server:create_app")


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), by parent PID."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (parent := _ppid(int(entry))) is not None:
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def is_server(pid: int) -> bool:
    return alive(pid) and any(mark in cmdline(pid) for mark in SERVER_MARKS)


def servers_below(pid: int) -> list[int]:
    """The Prefect server processes ``pid`` started, however deep."""
    return [p for p in descendants(pid) if is_server(p)]


def servers_using(home: Path) -> list[int]:
    """Every Prefect server process on this machine whose PREFECT_HOME is ``home`` (finds a
    server that is no longer below its command, e.g. reparented to init)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not is_server(int(entry)):
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PREFECT_HOME={home}".encode() in env:
            found.append(int(entry))
    return found


def wait_until(cond, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


class Command:
    """``python -m flows.cli ARGS`` in a new session (its own process group, as a shell job),
    stdout and stderr merged and collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        env = {**env, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH")) if p)}
        cwd.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *args], env=env, cwd=cwd, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.lines: list[str] = []
        self.seen_servers: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def servers(self) -> list[int]:
        """The Prefect servers below this command now (remembered for the cleanup)."""
        found = servers_below(self.proc.pid)
        self.seen_servers.update(found)
        return found

    def wait_for(self, text: str, timeout: float) -> bool:
        return wait_until(lambda: text in self.output or self.proc.poll() is not None,
                          timeout) and text in self.output

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def finish(self, timeout: float) -> int | None:
        """Exit status within ``timeout`` seconds, else None (the process still runs)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """Whatever is left of the group, and its servers: the test's own cleanup."""
        for pid in self.seen_servers | set(servers_below(self.proc.pid)):
            if is_server(pid):
                with_suppress(os.kill, pid, signal.SIGKILL)
        if self.proc.poll() is None:
            with_suppress(os.killpg, self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def with_suppress(fn, *args) -> None:
    try:
        fn(*args)
    except ProcessLookupError:
        pass
