"""Task runners for the flows: threads by default, Dask to scale out on an existing engine.

Three choices, one factory (``make_task_runner``):

* threads (default): Prefect's ``ThreadPoolTaskRunner``, one process, no extra start-up;
* a local Dask cluster (``--workers N``): N worker *processes* on 127.0.0.1, dashboard off,
  one thread each and TensorFlow's thread pools sized so N workers share the cores instead
  of oversubscribing them;
* an existing Dask scheduler (``--dask-address tcp://host:8786``): workers on other machines,
  which must see the same data (use ``s3://`` locations, see ``tasks/io/storage.py``).

The model is loaded once per worker process, not once per task and not shipped inside task
arguments: tasks call a per-process cache (``per_process``), and ``preload_on_workers``
registers a Dask worker plugin that fills that cache when a worker starts, so the first chunk
does not pay the load. Both are harmless under the thread runner (one process, one load).

Prefect and Dask are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

_CACHE: dict[Hashable, Any] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class RunnerSpec:
    """What the user asked for; plain data, so it can travel as a flow parameter."""

    workers: int | None = None      # start a local Dask cluster with this many processes
    address: str | None = None      # or connect to this Dask scheduler
    threads: int | None = None      # size of the default thread pool (None: Prefect's default)

    @property
    def kind(self) -> str:
        if self.address:
            return "dask"
        return "dask-local" if self.workers else "threads"

    def describe(self) -> str:
        if self.kind == "dask":
            return f"Dask scheduler at {self.address}"
        if self.kind == "dask-local":
            return f"local Dask cluster, {self.workers} worker process(es) on 127.0.0.1"
        return f"threads ({self.threads or 'default'} max)"


def runner_spec(workers: int | None = None, dask_address: str | None = None,
                threads: int | None = None) -> RunnerSpec:
    """Validate the CLI options into a spec; raises ``ValueError`` with a one-line message."""
    if workers is not None and dask_address:
        raise ValueError("--workers starts a local Dask cluster and --dask-address connects to "
                         "an existing one: give one of them, not both")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ValueError(f"thread count must be at least 1, got {threads}")
    if dask_address is not None:
        scheme = dask_address.split("://", 1)[0] if "://" in dask_address else ""
        if scheme not in ("tcp", "tls", "ws", "wss", "inproc"):
            raise ValueError(f"--dask-address {dask_address!r} is not a Dask scheduler address "
                             "(expected e.g. tcp://10.0.0.5:8786)")
    return RunnerSpec(workers=workers, address=dask_address or None, threads=threads)


def local_cluster_kwargs(workers: int, threads_per_worker: int = 1,
                         cpu_count: int | None = None) -> dict[str, Any]:
    """``distributed.LocalCluster`` arguments: processes on loopback, no dashboard, and
    TensorFlow/BLAS thread pools sized to this worker's share of the cores."""
    cpus = cpu_count or os.cpu_count() or 1
    share = str(max(1, cpus // workers))
    return {
        "n_workers": workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "host": "127.0.0.1",
        "scheduler_port": 0,
        "dashboard_address": None,
        "env": {"TF_NUM_INTRAOP_THREADS": share, "TF_NUM_INTEROP_THREADS": "1",
                "OMP_NUM_THREADS": share, "TF_CPP_MIN_LOG_LEVEL": "2"},
    }


def make_task_runner(spec: RunnerSpec | None = None) -> Any:
    """A Prefect task runner for ``flow.with_options(task_runner=...)``."""
    spec = spec or RunnerSpec()
    if spec.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=spec.threads)
    from prefect_dask import DaskTaskRunner

    if spec.kind == "dask":
        return DaskTaskRunner(address=spec.address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs=local_cluster_kwargs(int(spec.workers or 1)))


def with_task_runner(flow: Any, spec: RunnerSpec | None = None) -> Any:
    """``flow`` on the task runner ``spec`` asks for: the flow itself for the threaded
    default, else ``flow.with_options(task_runner=...)``. The one place the CLI commands
    (``classify``, ``watch``) and the benchmark pick a runner."""
    if spec is None or (spec.kind == "threads" and spec.threads is None):
        return flow
    return flow.with_options(task_runner=make_task_runner(spec))


def per_process(key: Hashable, factory: Callable[[], Any]) -> Any:
    """The value for ``key`` in this process, built by ``factory`` on first use only.

    Thread-safe: concurrent first calls build once. Use a key that changes when the thing
    changes (for a model: its version and path), so a new production model is picked up.
    """
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = factory()
        return _CACHE[key]


def _warm(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    fn(*args)


def preload_on_workers(fn: Callable[..., Any], *args: Any) -> bool:
    """Run ``fn(*args)`` once on every Dask worker of the current flow's runner, now and on
    workers that join later (a Dask worker plugin). Returns False (and does nothing) when the
    flow is not running on Dask. Call it from a flow body; ``fn`` must be importable."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None) if ctx else None
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:  # pragma: no cover - prefect-dask is a dependency
        return False
    if not isinstance(runner, DaskTaskRunner):
        return False
    from distributed.diagnostics.plugin import WorkerPlugin

    class _Preload(WorkerPlugin):
        name = f"posebatch-preload-{getattr(fn, '__qualname__', 'fn')}"

        def setup(self, worker: Any) -> None:
            _warm(fn, args)

    runner.client.register_plugin(_Preload(), name=_Preload.name)
    return True


def on_dask() -> bool:
    """Is the current flow running on Dask? Checked by module name, so the thread runner's
    runs never import Dask's client libraries (half a second of CPU, for nothing)."""
    from prefect.context import FlowRunContext

    runner = getattr(FlowRunContext.get(), "task_runner", None)
    return type(runner).__module__.startswith("prefect_dask")


def is_done(future: Any) -> bool:
    """Has a submitted task finished (without waiting)? A Dask future says so itself;
    any other is asked for its state (a thread future's is local)."""
    wrapped = getattr(future, "wrapped_future", None)
    if wrapped is not None and hasattr(wrapped, "done"):
        return bool(wrapped.done())
    return bool(future.state.is_final())


def chunks_in_flight() -> int:
    """Chunks classified at once: one on threads, workers + 1 on Dask.

    On threads one chunk at a time already keeps every core busy (reader threads feed the
    model, which uses all cores) and the next chunk starts as soon as one is classified, so
    its compute overlaps the previous commit. Two side by side would only double the
    read-ahead memory (and make a small run's memory unlike a large one's)."""
    if not on_dask():
        return 1
    try:
        from prefect.context import FlowRunContext

        runner = FlowRunContext.get().task_runner
        client = getattr(runner, "_client", None) or getattr(runner, "client", None)
        return max(2, len(client.scheduler_info().get("workers", {})) + 1)
    except Exception:  # noqa: BLE001 - any failure: one at a time is always correct
        return 1


class Bulk:
    """A value Prefect passes to a task without walking it (it walks lists, dicts and
    dataclasses looking for futures: seconds of CPU per 10,000 files). Picklable, so it
    crosses to Dask workers; the task unwraps ``.value``."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value
