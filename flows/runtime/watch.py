"""``posebatch watch``: classify batches as they become complete, one run at a time.

The readiness rule is the classification flow's own (``tasks.classify.discover.scan_input``: a batch
is complete when it holds ``_SUCCESS`` or nothing in it changed for the quiet period); this
module only decides *when* to look and *whether* to start a run:

* it wakes on filesystem notifications (``watchfiles``), on a timer while a batch is still
  inside its quiet period (no event will announce the end of a silence), and on a polling
  interval as a fallback (remote ``s3://`` inputs, filesystems without notifications, or a
  notification backend that fails);
* it starts a run when a complete batch holds files it has not handed to a run before (by
  path, size and mtime, seeded from the output's ledger so a restart does not redo work);
  the flow's ledger decides exactly-once, the watcher only avoids pointless runs;
* runs are sequential, in this process, so two never overlap on the output (and the flow's
  lock refuses a concurrent run from elsewhere; the watcher then retries later);
* SIGINT/SIGTERM set a flag: the current run finishes, then the watcher returns. Nothing is
  lost either way: a run cut short is reconciled by the next one.

Optionally (``--labeled DIR``) it also emits ``posebatch.labeled.updated`` when the labeled
folder changed and has been quiet, which triggers the retraining deployment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.runtime.events import LABELED_EVENT
from tasks.io.storage import Location, is_remote

log = logging.getLogger("posebatch.watch")

FileKey = tuple[str, int, int]          # (relative path, size, mtime_ns)


@dataclass
class WatchStats:
    """What the watcher did; printed by the CLI when it stops."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    failed_runs: int = 0
    wakeups: int = 0
    mode: str = "notify"
    labeled_events: int = 0


def _key(c: Any) -> FileKey:
    return (c.path, c.size, c.mtime_ns)


def ledger_entries(output_dir: str) -> Any:
    """The output ledger's entries (``path``, ``size``, ``mtime_ns``, ...) as a table."""
    from tasks.classify.ledger import Ledger

    return Ledger.load(output_dir).entries


class Watcher:
    """Watch ``input_dir``; call ``run()`` when complete batches hold files not yet handed
    to a run. ``known()`` returns the processed files as a table with ``path``, ``size``,
    ``mtime_ns`` (the output's ledger, ``ledger_entries``), so a restart redoes nothing."""

    def __init__(self, input_dir: str | os.PathLike[str], run: Callable[[], dict[str, Any]],
                 quiet_seconds: float = 5.0, poll_seconds: float = 30.0,
                 known: Callable[[], Any] | None = None,
                 exclude: tuple[str, ...] = (), force_polling: bool = False,
                 on_labeled: Callable[[], Any] | None = None,
                 labeled_dir: str | os.PathLike[str] | None = None):
        self.input_dir = str(input_dir)
        self.run = run
        self.quiet_seconds = float(quiet_seconds)
        self.poll_seconds = float(poll_seconds)
        self.known = known
        self.exclude = exclude
        self.force_polling = force_polling or is_remote(self.input_dir)
        self.on_labeled = on_labeled
        self.labeled_dir = str(labeled_dir) if labeled_dir else None
        self.stop_event = threading.Event()
        self.stats = WatchStats()
        self.handed: set[FileKey] = set()
        self._labeled_sig: frozenset[FileKey] | None = None
        self._labeled_changed_at: float | None = None

    # --- one look -------------------------------------------------------------------------
    def check(self) -> float:
        """Look once; start a run if warranted. Returns seconds until the next look is due."""
        self.stats.wakeups += 1
        from tasks.classify.discover import scan_input, unseen

        scan = scan_input(self.input_dir, self.quiet_seconds, exclude=self.exclude)
        fresh = [c for c in scan.ready if _key(c) not in self.handed]
        if fresh and self.known is not None:
            fresh, old = unseen(fresh, self.known())
            self.handed.update(_key(c) for c in old)
        if fresh and not self.stop_event.is_set():
            self._run(fresh)
        delay = self.poll_seconds
        if scan.waiting_batches:  # a batch is in its quiet period: look again when it may be over
            delay = min(delay, max(0.5, self.quiet_seconds / 2))
        labeled_delay = self._check_labeled()
        return min(delay, labeled_delay) if labeled_delay is not None else delay

    def _run(self, fresh: list[Any]) -> None:
        started = time.time()
        log.info("%d new file(s) in complete batches: starting a classification run",
                 len(fresh))
        try:
            result = self.run() or {}
        except Exception as exc:  # e.g. the output's lock is held: retry at the next look
            self.stats.failed_runs += 1
            log.warning("classification run failed: %s", str(exc).splitlines()[0][:300])
            return
        done = fresh
        if self.known is not None:  # files the run skipped (unreadable) come up again
            from tasks.classify.discover import unseen

            _, done = unseen(fresh, self.known())
        self.handed.update(_key(c) for c in done)
        self.stats.runs.append({"files": len(fresh), "seconds": round(time.time() - started, 2),
                                **{k: v for k, v in result.items() if _plain(v)}})

    def _check_labeled(self) -> float | None:
        if not self.labeled_dir or self.on_labeled is None:
            return None
        sig = frozenset((f.path, f.size, int(f.mtime * 1e9))
                        for f in Location(self.labeled_dir).list_files(".npy"))
        now = time.monotonic()
        if self._labeled_sig is None:
            self._labeled_sig = sig
            return None
        if sig != self._labeled_sig:
            self._labeled_sig = sig
            self._labeled_changed_at = now
        if self._labeled_changed_at is None:
            return None
        remaining = self.quiet_seconds - (now - self._labeled_changed_at)
        if remaining > 0:
            return max(0.5, remaining)
        self._labeled_changed_at = None
        try:
            self.on_labeled()
            self.stats.labeled_events += 1
        except Exception as exc:
            log.warning("could not emit %s: %s", LABELED_EVENT, str(exc).splitlines()[0])
        return None

    # --- the loop -------------------------------------------------------------------------
    def stop(self) -> None:
        self.stop_event.set()

    def watch(self) -> WatchStats:
        """Loop until ``stop()``; notifications first, polling if they are unavailable."""
        if not self.force_polling:
            try:
                self._watch_notify()
                return self.stats
            except (OSError, RuntimeError) as exc:  # no inotify, watch limit reached, ...
                log.warning("filesystem notifications unavailable (%s): polling every %.0f s",
                            exc, self.poll_seconds)
        self.stats.mode = "poll"
        delay = 0.0
        while not self.stop_event.wait(delay):
            delay = self.check()
        return self.stats

    def _watch_notify(self) -> None:
        import watchfiles

        if not Path(self.input_dir).is_dir():
            raise FileNotFoundError(f"input folder {self.input_dir} does not exist")
        self.stats.mode = "notify"
        delay = self.check()
        deadline = time.monotonic() + delay
        paths = [self.input_dir] + ([self.labeled_dir] if self.labeled_dir and
                                    Path(self.labeled_dir).is_dir() else [])
        # Wake at least every half second to honour the stop flag and the quiet timers.
        for changes in watchfiles.watch(*paths, stop_event=self.stop_event,
                                        rust_timeout=500, yield_on_timeout=True,
                                        debounce=200, raise_interrupt=False):
            if self.stop_event.is_set():
                break
            if changes or time.monotonic() >= deadline:
                delay = self.check()
                deadline = time.monotonic() + delay


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def classify_runner(params: dict[str, Any], spec: Any = None) -> Callable[[], dict[str, Any]]:
    """A callable running the classification flow with ``params`` on the chosen task runner
    (``flows.runtime.runners.RunnerSpec``; threads by default). The flow is imported on first
    use."""
    def run() -> dict[str, Any]:
        from flows.classify import classify_flow
        from flows.runtime.runners import with_task_runner

        return with_task_runner(classify_flow, spec)(**params)

    return run
