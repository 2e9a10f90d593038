"""Progress for an in-process caller (the CLI's progress bar), shared by both flows.

A flow calls ``emit``; the CLI adds a listener before it runs the flow and removes it after.
Nothing is shown when nobody listens, so a deployment's run costs nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Listeners:
    """Callbacks registered by this process; ``emit`` calls each with the same arguments."""

    def __init__(self) -> None:
        self._fns: list[Callable[..., None]] = []

    def add(self, fn: Callable[..., None]) -> Callable[[], None]:
        """Register ``fn``; returns its remover."""
        self._fns.append(fn)
        return lambda: self._fns.remove(fn) if fn in self._fns else None

    def emit(self, *args: Any) -> bool:
        """Call every listener; False when there is none (the caller may log instead)."""
        for fn in list(self._fns):
            fn(*args)
        return bool(self._fns)


class FileProgress:
    """Files done across chunks that report out of order (each reports its own count)."""

    def __init__(self, listeners: Listeners, total: int = 0):
        self.listeners = listeners
        self.total = total
        self.done: dict[int, int] = {}
        self.lock = threading.Lock()

    def update(self, chunk: int, files_done: int) -> None:
        with self.lock:
            self.done[chunk] = max(self.done.get(chunk, 0), files_done)
            done = sum(self.done.values())
        self.listeners.emit(done, self.total)


# The classify flow's file counter and the retrain flow's stage events: one registry each.
_file_listeners = Listeners()
_files = FileProgress(_file_listeners)
_stage_listeners = Listeners()


def add_file_listener(fn: Callable[[int, int], None]) -> Callable[[], None]:
    """Call ``fn(files_done, files_total)`` as classification advances; returns a remover."""
    return _file_listeners.add(fn)


def start_files(total: int) -> None:
    global _files
    _files = FileProgress(_file_listeners, total)


def report_files(chunk: int, files_done: int) -> None:
    """Tell this process's listeners. Flows and tasks call this function instead of naming
    ``_files``: on Dask, Prefect pickles a task with the globals it names, and ``_files``
    holds a lock. (On a worker this updates the worker's own, listener-less copy.)"""
    _files.update(chunk, files_done)


def add_stage_listener(fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
    """Call ``fn(event)`` on each retraining stage and epoch; returns a remover. Events are
    dicts with ``stage`` and, for epochs, ``epoch``, ``epochs`` and ``logs``."""
    return _stage_listeners.add(fn)


def emit_stage(event: dict[str, Any]) -> bool:
    """Send a retraining event; False when nobody listens."""
    return _stage_listeners.emit(event)
