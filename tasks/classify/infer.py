"""Inference on a chunk of files: read, hash and validate ahead on threads, compute in batches.

``classify_files`` is the unit of work a flow task (or a Dask worker) runs. It takes plain,
picklable arguments (paths, the registry folder and a model version) and returns plain data
(``ChunkResult``), so it runs the same in a thread or on another machine.

Why it is fast and bounded:

- the model is loaded once per process (``load_predictor``'s cache, keyed by registry,
  version, batch size and engine) behind one engine (``tasks.classify.engine``): ONNX
  Runtime on the version's verified ``model.onnx`` (no TensorFlow in the process), or the
  Keras model in one compiled call (``tasks.classify.keras_engine``). Frames stream through
  a few reused, 64-byte aligned batch buffers that either engine reads in place.
  One call runs at a time per process (either engine already spreads one call over all
  cores): chunks classified side by side on threads (e.g. a Dask worker with several
  threads) take turns on the model, one reading while the other computes, instead of
  both computing at half speed with twice the working memory.
- files are read, SHA-256 hashed and validated by a small thread pool while the model
  computes the previous batch (hashing, NumPy checks and file reads release the GIL); the
  pool runs at most ``readahead_mb`` of file bytes ahead (a little more than one batch of
  frames: enough to keep the model fed), and into at most the ring's buffers, so memory is
  bounded whatever the number of files.
- each file is read once. A local file of the usual layout (float32 frames behind NumPy's
  128-byte header) is read by its reader thread straight into its rows of a batch buffer
  and hashed and validated there (``tasks.classify.batches``): nothing is copied on the
  consuming thread. Any other file is read into one buffer sized by the file, hashed and
  decoded from memory (``tasks.io.validate.read_untrusted``: the header parse cached by its
  bytes, one min/max pass for range, finiteness and warnings), then copied once, into a
  batch. Either way a file's outcome is the same (``tests/tasks/classify/test_batches.py``).
- ``ChunkResult.seconds`` says where a chunk's time went on the consuming thread:
  ``read_wait`` (waiting for the readers), ``copy`` (files read the general way, into their
  batch; holes left by rejected files), ``compute`` (the model), ``ood``
  (out-of-distribution checks and monitoring statistics), ``load`` and ``total``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from models.keypoints import decode
from models.ood import ood_codes
from models.spec import HEATMAP_SHAPE
from tasks.classify.batches import WAIT, Batch, BatchRing, Slot, read_into
from tasks.classify.engine import (
    Engine,
    choose_engine,
    open_engine,
    probabilities,
)
from tasks.io.faults import crash_point
from tasks.io.storage import Location, absolute
from tasks.io.validate import Rejected, read_untrusted
from tasks.monitor.inputs import InputStats

T = TypeVar("T")
R = TypeVar("R")
WIDTH_EVERY = 8  # peak widths for monitoring from every 8th frame (tasks/monitor/inputs.py)

FRAME_VALUES = int(np.prod(HEATMAP_SHAPE))


@dataclass
class FileOutcome:
    """What reading one file gave: its hash and frame count, or why it was rejected."""

    path: str
    sha256: str | None = None
    frames: int = 0
    reason: str | None = None          # a tasks.io.validate.REASONS code when rejected
    detail: str | None = None
    warnings: list[list[str]] = field(default_factory=list)
    # Not recorded, retried next run: "vanished" (gone since discovery) or "unreadable"
    # (could not be opened or read, e.g. permissions); ``detail`` says why.
    skipped: str | None = None


@dataclass
class ChunkResult:
    """Per file outcomes and per classified frame (file index, frame index, probabilities)."""

    files: list[FileOutcome]
    file_index: np.ndarray            # int32 [F], index into ``files``
    frame_index: np.ndarray           # int32 [F]
    probabilities: np.ndarray         # float32 [F, C], model class order
    class_names: list[str]
    model_version: str
    batches: int = 0
    engine: str = ""                  # which engine computed the probabilities
    seconds: dict[str, float] = field(default_factory=dict)
    input_stats: InputStats = field(default_factory=InputStats)  # for the run's monitoring


@dataclass
class Predictor:
    """A version's model behind one engine (``tasks.classify.engine``):
    ``probabilities = softmax(logits / T)``, the same NumPy softmax for every engine."""

    version: str
    class_names: list[str]
    temperature: float
    batch_size: int
    engine: Engine
    ood: dict[str, Any] | None = None  # the model's out-of-distribution reference (metadata)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, batch: np.ndarray, n: int | None = None) -> np.ndarray:
        """Probabilities of the first ``n`` rows (default all) of a full batch buffer. The
        call is synchronous: once it returns, the caller may overwrite ``batch``."""
        n = len(batch) if n is None else n
        with self.lock:  # one model call at a time per process: see the module docstring
            logits = self.engine.logits(batch, n)
        return probabilities(logits, self.temperature)


_PREDICTORS: dict[tuple[str, str, int, bool, str], Predictor] = {}
_PREDICTOR_LOCK = threading.Lock()


def load_predictor(registry_dir: str, model_version: str, batch_size: int = 256,
                   jit_compile: bool = False, engine: str = "auto") -> Predictor:
    """The process-wide predictor for a registry version on an engine (``keras`` or
    ``onnx``, as ``tasks.classify.engine.choose_engine`` decided; ``auto`` decides here),
    loaded on first use. ``jit_compile``: XLA, Keras engine only."""
    root = absolute(registry_dir)  # a local folder made absolute, or an s3:// URL as it is
    if engine == "auto":
        from models.registry import Registry

        engine, _ = choose_engine(Registry(root).get(model_version), engine)
    key = (root, model_version, int(batch_size), bool(jit_compile) and engine == "keras",
           engine)
    with _PREDICTOR_LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = _build_predictor(root, model_version, int(batch_size),
                                                key[3], engine)
        return _PREDICTORS[key]


def _build_predictor(registry_dir: str, version: str, batch_size: int,
                     jit_compile: bool, engine: str = "keras") -> Predictor:
    from models.registry import Registry

    entry = Registry(registry_dir).get(version)
    names = entry.class_names
    temperature = float(entry.temperature)
    if temperature <= 0:
        raise ValueError(f"model {version}: temperature must be > 0, got {temperature}")
    backend = open_engine(entry, engine, batch_size, jit_compile)
    if backend.width != len(names):
        raise ValueError(f"model {version} outputs {backend.width} logits but its metadata "
                         f"lists {len(names)} class names")
    return Predictor(version, names, temperature, batch_size, backend,
                     ood=entry.metadata.get("ood"))


def read_input(loc: Location, rel: str, max_frames: int, slot: Slot | None = None
               ) -> tuple[FileOutcome, np.ndarray | None]:
    """Read one file once, bounded (``tasks.validate.read_untrusted``): hash its bytes and
    validate them. With a ``slot`` (``tasks.classify.batches``), a local file's frames are
    read straight into the slot's rows when the file is what its size said: then the frames
    returned are the rows themselves. Never raises for bad input."""
    out = FileOutcome(rel)
    try:
        if slot is not None:
            out.sha256, got = read_into(loc.path(rel), slot, max_frames)
            if isinstance(got, list):
                out.frames, out.warnings = slot.frames, got
                return out, slot.rows
            if isinstance(got, Rejected):
                out.reason, out.detail = got.reason, got.detail
                return out, None
        with (loc.open_input(rel) if loc.is_remote else open(loc.path(rel), "rb")) as fh:
            out.sha256, heat = read_untrusted(fh, max_frames)
    except FileNotFoundError:
        out.skipped = "vanished"
        return out, None
    except OSError as exc:  # unreadable before hashing: nothing to identify it by
        out.sha256 = None
        out.skipped, out.detail = "unreadable", f"{type(exc).__name__}: {exc}"[:200]
        return out, None
    if isinstance(heat, Rejected):
        out.reason, out.detail = heat.reason, heat.detail
        return out, None
    out.frames = int(heat.frames.shape[0])
    out.warnings = heat.warnings
    return out, heat.frames


def prefetch(items: Iterable[tuple[T, int]], fn: Callable[..., R], threads: int,
             budget_bytes: int, claim: Callable[[int], Any] | None = None) -> Iterator[R]:
    """``fn(item)`` for each ``(item, size)`` in order, computed ahead on ``threads`` threads
    while at most ``budget_bytes`` (by size) are in flight (always at least one item).

    ``claim(size)``, called in order on the consuming thread before an item is submitted,
    gives a token passed on as ``fn(item, token)``, or ``WAIT``: nothing more is submitted
    until the consumer has taken the next result (``tasks.classify.batches``)."""
    pending: deque[tuple[Any, int]] = deque()
    inflight = 0
    it = iter(items)
    held: tuple[T, int] | None = None
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="posebatch-read") as pool:
        def fill() -> None:
            nonlocal inflight, held
            while not pending or inflight < budget_bytes:
                nxt = held if held is not None else next(it, None)
                if nxt is None:
                    return
                token = claim(nxt[1]) if claim is not None else None
                if token is WAIT:
                    held = nxt
                    return
                held = None
                fut = pool.submit(fn, nxt[0]) if claim is None else pool.submit(fn, nxt[0],
                                                                                token)
                pending.append((fut, nxt[1]))
                inflight += nxt[1]

        while True:
            fill()
            if not pending:
                if held is not None:
                    raise RuntimeError("prefetch: claim refused with nothing in flight")
                return
            fut, size = pending.popleft()
            inflight -= size
            yield fut.result()


BatchCallback = Callable[[dict[str, Any]], None]


def classify_files(input_dir: str, files: list[tuple[str, int]], registry_dir: str,
                   model_version: str, batch_size: int = 256, max_frames: int = 4096,
                   io_threads: int = 2, readahead_mb: int = 64,
                   on_batch: BatchCallback | None = None,
                   jit_compile: bool = False, engine: str = "auto") -> ChunkResult:
    """Classify ``files`` (relative path, size) of ``input_dir`` with a registry model.

    Bad files come back as rejected outcomes (never an exception); frames of good files come
    back with their probabilities. ``on_batch`` gets a small dict after every model batch.
    """
    t_start = time.perf_counter()
    pred = load_predictor(registry_dir, model_version, batch_size, jit_compile, engine)
    t_loaded = time.perf_counter()
    loc = Location(input_dir)
    bsz = pred.batch_size
    ring = BatchRing(bsz)  # frames read straight into their rows (tasks.classify.batches)
    spill: Batch | None = None  # frames that came back in their own buffer, copied in
    probs: list[np.ndarray] = []
    file_idx: list[np.ndarray] = []
    frame_idx: list[np.ndarray] = []
    outcomes: list[FileOutcome] = []
    batches = 0
    # Where the chunk's time goes (seconds on this thread): waiting for the readers, copying
    # frames into a batch (files read the general way, and holes), the model call, the
    # out-of-distribution checks and the monitoring statistics ("ood": one decode serves both).
    stage = {"read_wait": 0.0, "copy": 0.0, "compute": 0.0, "ood": 0.0}
    stats = InputStats()

    def run(batch: Batch) -> None:
        nonlocal batches
        t0 = time.perf_counter()
        fill = batch.compact()
        t1 = time.perf_counter()
        stage["copy"] += t1 - t0
        if not fill:
            return
        buf, owner_file, owner_frame = batch.buf, batch.owner_file, batch.owner_frame
        p = pred(buf, fill)
        t2 = time.perf_counter()
        stage["compute"] += t2 - t1
        # Out-of-distribution codes join the frame's warnings, and the monitoring statistics
        # count the batch: one decode, vectorised passes.
        decoded = decode(buf[:fill])
        stats.add(buf[:fill], decoded, WIDTH_EVERY)
        for f, frame, extra in zip(owner_file[:fill].tolist(), owner_frame[:fill].tolist(),
                                   ood_codes(buf[:fill], pred.ood, decoded), strict=True):
            if extra:
                outcomes[f].warnings[frame].extend(extra)
        stage["ood"] += time.perf_counter() - t2
        probs.append(p.copy())
        file_idx.append(owner_file[:fill].copy())
        frame_idx.append(owner_frame[:fill].copy())
        batches += 1
        if on_batch is not None:
            on_batch({"batch": batches, "frames": fill, "files_done": len(outcomes),
                      "files": len(files), "seconds": time.perf_counter() - t_start})
        crash_point("batch")

    def copy_in(i: int, frames: np.ndarray) -> None:
        """Frames read into their own buffer, copied into the spill batch (run when full)."""
        nonlocal spill
        start = 0
        while start < len(frames):
            t0 = time.perf_counter()
            spill = spill or Batch.empty(bsz)
            take = min(bsz - spill.rows, len(frames) - start)
            row = spill.add(i, take)
            spill.owner_frame[row:row + take] += start
            spill.buf[row:row + take] = frames[start:start + take]
            spill.filled[row:row + take] = True
            start += take
            stage["copy"] += time.perf_counter() - t0
            if spill.rows == bsz:
                run(spill)
                spill.rows = spill.planned = 0

    def read(rel: str, slot: Slot | None) -> tuple[FileOutcome, np.ndarray | None, Slot | None]:
        return (*read_input(loc, rel, max_frames, slot), slot)

    budget = max(1, readahead_mb) << 20
    local = not loc.is_remote
    reader = prefetch(files, read, io_threads, budget,
                      claim=lambda size: ring.claim(size, local))
    t0 = time.perf_counter()
    for outcome, frames, slot in reader:
        t1 = time.perf_counter()
        stage["read_wait"] += t1 - t0
        i = len(outcomes)
        outcomes.append(outcome)
        if slot is not None:
            landed = frames is not None and np.may_share_memory(frames, slot.batch.buf)
            ring.done(slot, landed)
            if not landed and frames is not None:  # read again the general way
                copy_in(i, frames)
        elif frames is not None:
            copy_in(i, frames)
        for batch in ring.runnable():
            run(batch)
            ring.release(batch)
        t0 = time.perf_counter()
    ring.seal()
    for batch in ring.runnable():
        run(batch)
    if spill is not None and spill.rows:
        run(spill)
    if len(probs) > 1:  # rows in file order whichever batch computed them
        order = np.lexsort((np.concatenate(frame_idx), np.concatenate(file_idx)))
        probs = [np.concatenate(probs)[order]]
        file_idx, frame_idx = [np.concatenate(file_idx)[order]], \
            [np.concatenate(frame_idx)[order]]
    total = time.perf_counter() - t_start
    width = len(pred.class_names)
    return ChunkResult(
        files=outcomes,
        file_index=np.concatenate(file_idx) if file_idx else np.zeros(0, np.int32),
        frame_index=np.concatenate(frame_idx) if frame_idx else np.zeros(0, np.int32),
        probabilities=np.concatenate(probs) if probs else np.zeros((0, width), np.float32),
        class_names=list(pred.class_names), model_version=pred.version, batches=batches,
        engine=pred.engine.name,
        seconds={"load": t_loaded - t_start, **stage, "total": total},
        input_stats=stats,
    )
