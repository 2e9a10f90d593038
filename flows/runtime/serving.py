"""Serve deployments until Ctrl-C or SIGTERM, then stop in order, within a bound.

What an operator's Ctrl-C (SIGINT to the terminal's process group), ``systemctl stop`` or a
container stop (SIGTERM to every process) must get: ``serve`` and its server gone in seconds,
exit status 0, no traceback. The order:

1. the first signal asks for a stop (one line says so, and that a second one stops at once);
   before the deployments are served it interrupts the start-up at once;
2. the runner stops polling and cancels the flow runs it started (``RUNNER_STOP`` seconds at
   most, then it is abandoned);
3. the deployments are paused when the server still answers (``pause``), else skipped with
   one line: a server killed by the same group signal is not waited for;
4. the caller stops its server (``serve.serve_forever``).

A second signal at any point kills the server and exits 130 at once.

The runner is Prefect's own (``prefect.runner.Runner``, as ``prefect.serve`` uses), with its
``pause_on_shutdown`` off: its pause retries against a dead server for a minute (the hang
seen after a group SIGTERM). ``Runner.start`` installs its SIGTERM handler from the runner's
``handle_sigterm`` attribute; ours is put there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

RUNNER_STOP = 5.0      # seconds for the runner to stop and cancel its runs, in all
PAUSE_TIMEOUT = 2.0    # seconds per request when pausing the deployments


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Shutdown:
    """SIGINT/SIGTERM for ``serve``: the first asks for an orderly stop, the second stops at
    once (``hard_stop``, then exit 130)."""

    def __init__(self, hard_stop: Callable[[], None]) -> None:
        self.hard_stop = hard_stop
        self.signals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    @property
    def requested(self) -> bool:
        return self.signals > 0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def attach(self) -> asyncio.Event:
        """Called in the serving loop: from now on a signal sets the returned event."""
        self._loop, self._event = asyncio.get_running_loop(), asyncio.Event()
        if self.requested:
            self._event.set()
        return self._event

    def detach(self) -> None:
        """The loop is over: a signal now means the orderly stop is too slow."""
        self._loop = self._event = None
        self.signals = max(self.signals, 1)

    def handle(self, signum: int, frame: Any = None) -> None:
        self.signals += 1
        if self.signals > 1:
            say("stopping now")
            self.hard_stop()
            os._exit(130)
        say(f"{signal.Signals(signum).name} received: stopping serve (again to stop at once)")
        if self._loop is not None and self._event is not None:
            self._loop.call_soon_threadsafe(self._event.set)
        else:                                   # still starting: interrupt the start-up
            raise KeyboardInterrupt


async def serve_until_stopped(deployments: list[Any], shutdown: Shutdown) -> list[Any]:
    """Register ``deployments``, serve them until ``shutdown`` is asked for, stop the runner.
    Returns the ids of the registered deployments (to pause)."""
    from prefect.runner import Runner

    stop = shutdown.attach()
    runner = Runner(pause_on_shutdown=False)
    runner.handle_sigterm = shutdown.handle  # type: ignore[method-assign]
    ids = []
    for dep in deployments:
        if stop.is_set():
            return ids
        ids.append(await runner.aadd_deployment(dep))
    task = asyncio.create_task(runner.start())
    while not (runner.started or task.done() or stop.is_set()):
        await asyncio.sleep(0.05)
    if runner.started:
        say("Your deployments are being served: "
            + ", ".join(f"{d.flow_name}/{d.name}" for d in deployments) + " (Ctrl-C stops)")
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # the runner ended by itself: its error is the command's
        return ids
    await _stop_runner(runner, task)
    return ids


async def _stop_runner(runner: Any, task: asyncio.Task[Any]) -> None:
    """``Runner.astop`` (cancels the runs it started, ends its loops), bounded; a runner
    still starting is cancelled instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUNNER_STOP
    try:
        if runner.started:
            await asyncio.wait_for(runner.astop(), RUNNER_STOP)
        else:
            task.cancel()
        await asyncio.wait_for(task, max(0.1, deadline - loop.time()))
    except asyncio.CancelledError:
        pass
    except TimeoutError:
        task.cancel()
        say(f"the runner did not stop within {RUNNER_STOP:.0f} s: left behind")
    except Exception as exc:  # noqa: BLE001 - stopping anyway; one line, no traceback
        task.cancel()
        say(f"the runner stopped with an error: {str(exc).splitlines()[0][:200]}")


def pause(api_url: str, ids: list[Any], timeout: float = PAUSE_TIMEOUT) -> str:
    """Pause the served deployments so the server's scheduler stops creating runs nobody
    serves. One line: what was done, or why it was skipped."""
    import httpx

    if not ids:
        return "no deployments registered: nothing to pause"
    try:
        with httpx.Client(base_url=api_url, timeout=timeout) as client:
            for dep_id in ids:
                client.patch(f"/deployments/{dep_id}", json={"paused": True}
                             ).raise_for_status()
    except httpx.HTTPError as exc:
        reason = type(exc).__name__ if not str(exc) else str(exc).splitlines()[0][:120]
        return (f"deployments not paused: the Prefect server at {api_url} did not answer "
                f"({reason})")
    return f"paused {len(ids)} deployment(s)"
