"""Child processes of a command: a free local port, a child that dies with its parent, and
stopping a child.

One owner for all three, shared by the early temporary server (``ephemeral``) and the served
deployments' server (``server``). Standard library only, so ``ephemeral`` stays instant to
import.

Why a wrapper and not ``preexec_fn``: ``preexec_fn`` is unsafe once threads exist (Prefect
and TensorFlow start them early), and the parent-death signal must be set in the child before
it runs anything. ``guarded`` prefixes the command with a two-line Python program that sets
``PR_SET_PDEATHSIG`` and then ``exec``s the real command: same process id, no extra process,
works whatever threads the parent runs. The kernel sends the signal when the *thread* that
started the child ends, so guarded children are started from the main thread.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

# argv: [python, -c, _GUARD, parent_pid, signal, command...]. On Linux: ask for `signal` when
# the parent dies; if it already died (between fork and here), give up at once.
_GUARD = (
    "import os, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    import ctypes\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[2]))  # PR_SET_PDEATHSIG\n"
    "    if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def guarded(command: list[str], sig: int = signal.SIGTERM) -> list[str]:
    """``command`` wrapped so that the child gets ``sig`` when this process dies, however it
    dies (SIGKILL, OOM kill): a server it started never outlives it. ``command[0]`` must be
    an absolute path (it is ``exec``'d, not looked up)."""
    return [sys.executable, "-c", _GUARD, str(os.getpid()), str(int(sig)), *command]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0, group: bool = True) -> None:
    """Stop a child: SIGTERM, then SIGKILL if it is still running after ``grace`` seconds.

    ``group``: the child was started in its own session (``start_new_session=True``), so the
    signals go to its whole process group and reach what it started itself (a server's
    workers). Without, only the child is signalled: a child sharing our group must never get
    a group signal, which would hit this process too."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_now(proc: subprocess.Popen[Any] | None, group: bool = True) -> None:
    """SIGKILL a child (and its group) without waiting: the second Ctrl-C's way out."""
    if proc is None or proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass
