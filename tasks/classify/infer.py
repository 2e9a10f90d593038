"""Inference on a chunk of files: read, hash and validate ahead on threads, compute in batches.

``classify_files`` is the unit of work a flow task (or a Dask worker) runs. It takes plain,
picklable arguments (paths, the registry folder and a model version) and returns plain data
(``ChunkResult``), so it runs the same in a thread or on another machine.

Why it is fast and bounded:

- the model is loaded once per process (``load_predictor``'s cache, keyed by registry,
  version and batch size), and called through one compiled ``tf.function`` with a fixed
  input signature ``[batch_size, 17, 64, 48]``: every call reuses one graph; the last batch
  is padded (its padding rows are dropped). ``predict()`` would rebuild its loop per call.
  The batch buffer is handed to TensorFlow without a copy (DLPack, on a 64-byte aligned
  buffer): converting 53 MB of frames per call, and faulting in fresh memory for it, cost
  more CPU than anything but the convolutions themselves.
  One call runs at a time per process (TensorFlow already spreads one call over all
  cores): chunks classified side by side on threads (e.g. a Dask worker with several
  threads) take turns on the model, one reading while the other computes, instead of
  both computing at half speed with twice the working memory.
- files are read, SHA-256 hashed and validated by a small thread pool while the model
  computes the previous batch (hashing, NumPy checks and file reads release the GIL); the
  pool runs at most ``readahead_mb`` of file bytes ahead (a little more than one batch of
  frames: enough to keep the model fed), so memory is bounded whatever the number of files,
  and frames stream through one reused batch buffer.
- each file is read once, into one buffer sized by the file: the bytes are hashed and
  decoded from memory (``tasks.io.validate.read_untrusted``: the header parse cached by its
  bytes, one min/max pass for range, finiteness and warnings; the frames are a view on
  the buffer), then copied once, into the batch.
- the network's stem is run pool-first (``pool_before_transpose``): the same numbers as
  the saved graph, without moving every batch to channels-last at full size. TensorFlow's
  thread pools are sized to the cores this process may use (``configure_threads``).
- ``ChunkResult.seconds`` says where a chunk's time went on the consuming thread:
  ``read_wait`` (waiting for the readers), ``copy`` (into the batch), ``compute`` (the
  model), ``ood`` (out-of-distribution checks), ``load`` and ``total``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.keypoints import decode
from models.ood import ood_codes
from models.spec import HEATMAP_SHAPE
from tasks.io.faults import crash_point
from tasks.io.storage import Location, absolute
from tasks.io.validate import Rejected, read_untrusted
from tasks.monitor.inputs import InputStats

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
    seconds: dict[str, float] = field(default_factory=dict)
    input_stats: InputStats = field(default_factory=InputStats)  # for the run's monitoring


@dataclass
class Predictor:
    """A loaded model behind one compiled call: ``probabilities = softmax(logits / T)``."""

    version: str
    class_names: list[str]
    temperature: float
    batch_size: int
    fn: Any
    from_dlpack: Any = None
    ood: dict[str, Any] | None = None  # the model's out-of-distribution reference (metadata)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a full batch. The call is synchronous: once it returns, the
        caller may overwrite ``batch`` (which TensorFlow may have read in place)."""
        x: Any = batch
        if self.from_dlpack is not None and is_aligned(batch):
            x = self.from_dlpack(batch.__dlpack__())
        with self.lock:  # one model call at a time per process: see the module docstring
            return np.asarray(self.fn(x), dtype=np.float32)


ALIGN = 64  # TensorFlow's CPU kernels require (and check) 64-byte aligned tensor memory


def is_aligned(arr: np.ndarray) -> bool:
    return (arr.dtype == np.float32 and arr.flags.c_contiguous
            and arr.ctypes.data % ALIGN == 0)


def aligned_zeros(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """Zeros whose data starts on an ``ALIGN``-byte boundary (NumPy only promises 16)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(n + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + n].view(dtype).reshape(shape)


_PREDICTORS: dict[tuple[str, str, int, bool], Predictor] = {}
_PREDICTOR_LOCK = threading.Lock()


def load_predictor(registry_dir: str, model_version: str, batch_size: int = 256,
                   jit_compile: bool = False) -> Predictor:
    """The process-wide predictor for a registry version (loaded and compiled on first use).

    ``jit_compile``: XLA (the settings' ``xla``, ``POSEBATCH_XLA=1``). Measured on the
    2-core machine with the deployed network, XLA ran a batch on one core where TensorFlow's
    own kernels use both, cost about 15% more CPU per batch and half a second more to
    compile: off is the better default; try it on other hardware.
    """
    key = (absolute(registry_dir), model_version, int(batch_size), bool(jit_compile))
    with _PREDICTOR_LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = _build_predictor(key[0], model_version, int(batch_size),
                                                jit_compile)
        return _PREDICTORS[key]


def _build_predictor(registry_dir: str, version: str, batch_size: int,
                     jit_compile: bool) -> Predictor:
    import tensorflow as tf

    from models.registry import Registry, load_model

    configure_threads(tf)
    entry = Registry(registry_dir).get(version)
    model = load_model(entry)
    names = entry.class_names
    temperature = float(entry.temperature)
    if temperature <= 0:
        raise ValueError(f"model {version}: temperature must be > 0, got {temperature}")
    width = int(model.outputs[0].shape[-1])
    if width != len(names):
        raise ValueError(f"model {version} outputs {width} logits but its metadata lists "
                         f"{len(names)} class names")

    def compiled(net: Any) -> Any:
        @tf.function(input_signature=[tf.TensorSpec([batch_size, *HEATMAP_SHAPE], tf.float32)],
                     jit_compile=jit_compile, reduce_retracing=False)
        def probabilities(x: Any) -> Any:
            return tf.nn.softmax(net(x, training=False) / temperature, axis=-1)

        return probabilities

    net = model
    fast = pool_before_transpose(model)
    if fast is not None:  # the same numbers, checked eagerly on a few frames, or the saved graph
        probe = np.random.default_rng(0).random((4, *HEATMAP_SHAPE), np.float32)
        if np.allclose(np.asarray(fast(probe, training=False)),
                       np.asarray(model(probe, training=False)), rtol=0, atol=1e-5):
            net = fast
    probabilities = compiled(net)
    probabilities(np.zeros((batch_size, *HEATMAP_SHAPE), np.float32))  # trace now, once
    return Predictor(version, names, temperature, batch_size, probabilities,
                     from_dlpack=_dlpack_importer(), ood=entry.metadata.get("ood"))


def configure_threads(tf: Any) -> None:
    """TensorFlow's thread pools, set on purpose before its runtime starts: one op runs on
    every core this process may use, at most two ops at once (the network is a chain with
    one side branch). TensorFlow's own default counts the machine's cores, which in a
    container limited to a few of them oversubscribes it. Too late once TensorFlow has run
    an op: then unchanged. (No knob: on the 2-core machine no setting measured better.)"""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    intra, inter = cores or 1, 2
    try:
        if tf.config.threading.get_intra_op_parallelism_threads() != intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if tf.config.threading.get_inter_op_parallelism_threads() != inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # already initialised (e.g. training ran in this process)
        pass


def pool_before_transpose(model: Any) -> Any:
    """An inference twin of ``model`` (shared weights) that max-pools the heatmaps in their
    stored layout before moving the channels last, or None when the model has no such stem.

    The deployed network (``models.network``) transposes the whole ``[B,17,64,48]`` batch
    to channels-last and then 2x2 max-pools it: the transpose moves 53 MB per batch of 256.
    Pooling first (oneDNN pools channels-first on CPU) and transposing the quarter-size
    result gives identical numbers (a maximum is a maximum) for about 5 % less CPU per
    batch. Only for a ``to_channels_last`` Permute((2, 3, 1)) feeding nothing but a
    ``stem_pool`` 2x2/2 valid max-pool; the saved model itself is untouched."""
    import keras
    import tensorflow as tf

    try:
        perm, pool = model.get_layer("to_channels_last"), model.get_layer("stem_pool")
        stem = (isinstance(perm, keras.layers.Permute) and tuple(perm.dims) == (2, 3, 1)
                and isinstance(pool, keras.layers.MaxPooling2D)
                and tuple(pool.pool_size) == (2, 2) and tuple(pool.strides) == (2, 2)
                and pool.padding == "valid" and pool.data_format == "channels_last"
                and len(perm._outbound_nodes) == 1 and pool.input is perm.output)
    except (ValueError, AttributeError):
        return None
    if not stem:
        return None

    class PoolThenTranspose(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            pooled = tf.nn.max_pool2d(x, 2, 2, "VALID", data_format="NCHW")
            return tf.transpose(pooled, [0, 2, 3, 1])

    class Same(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x

    def swap(layer: Any) -> Any:
        if layer is perm:
            return PoolThenTranspose(name="pool_then_transpose")
        return Same(name="pooled") if layer is pool else layer  # others: shared weights

    try:
        return keras.models.clone_model(model, clone_function=swap)
    except Exception:  # noqa: BLE001 - any surprise: the saved graph as it is
        return None


def _dlpack_importer() -> Any:
    """TensorFlow's zero-copy import of a NumPy buffer, if this build has it (else None)."""
    import tensorflow as tf

    fn = getattr(getattr(tf.experimental, "dlpack", None), "from_dlpack", None)
    if fn is None or not hasattr(np.ndarray, "__dlpack__"):
        return None
    try:
        probe = aligned_zeros((2, 3))
        probe[1, 2] = 7.0
        if float(fn(probe.__dlpack__())[1, 2]) != 7.0:
            return None
    except Exception:  # noqa: BLE001 - any failure: copy as before
        return None
    return fn


def read_input(loc: Location, rel: str, max_frames: int) -> tuple[FileOutcome, np.ndarray | None]:
    """Read one file once, bounded (``tasks.validate.read_untrusted``): hash its bytes and
    validate them. Never raises for bad input."""
    out = FileOutcome(rel)
    try:
        with (loc.open_input(rel) if loc.is_remote else open(loc.path(rel), "rb")) as fh:
            out.sha256, heat = read_untrusted(fh, max_frames)
    except FileNotFoundError:
        out.skipped = "vanished"
        return out, None
    except OSError as exc:  # unreadable before hashing: nothing to identify it by
        out.skipped, out.detail = "unreadable", f"{type(exc).__name__}: {exc}"[:200]
        return out, None
    if isinstance(heat, Rejected):
        out.reason, out.detail = heat.reason, heat.detail
        return out, None
    out.frames = int(heat.frames.shape[0])
    out.warnings = heat.warnings
    return out, heat.frames


def prefetch(items: Iterable[tuple[str, int]], fn: Callable[[str], Any], threads: int,
             budget_bytes: int) -> Iterator[Any]:
    """``fn(path)`` for each ``(path, size)`` in order, computed ahead on ``threads`` threads
    while at most ``budget_bytes`` (by file size) are in flight (always at least one file)."""
    pending: deque[tuple[Any, int]] = deque()
    inflight = 0
    it = iter(items)
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="posebatch-read") as pool:
        def fill() -> None:
            nonlocal inflight
            while not pending or inflight < budget_bytes:
                nxt = next(it, None)
                if nxt is None:
                    return
                pending.append((pool.submit(fn, nxt[0]), nxt[1]))
                inflight += nxt[1]

        fill()
        while pending:
            fut, size = pending.popleft()
            inflight -= size
            result = fut.result()
            fill()
            yield result


BatchCallback = Callable[[dict[str, Any]], None]


def classify_files(input_dir: str, files: list[tuple[str, int]], registry_dir: str,
                   model_version: str, batch_size: int = 256, max_frames: int = 4096,
                   io_threads: int = 2, readahead_mb: int = 64,
                   on_batch: BatchCallback | None = None,
                   jit_compile: bool = False) -> ChunkResult:
    """Classify ``files`` (relative path, size) of ``input_dir`` with a registry model.

    Bad files come back as rejected outcomes (never an exception); frames of good files come
    back with their probabilities. ``on_batch`` gets a small dict after every model batch.
    """
    t_start = time.perf_counter()
    pred = load_predictor(registry_dir, model_version, batch_size, jit_compile)
    t_loaded = time.perf_counter()
    loc = Location(input_dir)
    bsz = pred.batch_size
    buf = aligned_zeros((bsz, *HEATMAP_SHAPE))
    owner_file = np.zeros(bsz, np.int32)
    owner_frame = np.zeros(bsz, np.int32)
    probs: list[np.ndarray] = []
    file_idx: list[np.ndarray] = []
    frame_idx: list[np.ndarray] = []
    outcomes: list[FileOutcome] = []
    fill = 0
    batches = 0
    # Where the chunk's time goes (seconds on this thread): waiting for the readers, copying
    # frames into the batch, the model call, the out-of-distribution checks and the
    # monitoring statistics ("ood": one decode serves both).
    stage = {"read_wait": 0.0, "copy": 0.0, "compute": 0.0, "ood": 0.0}
    stats = InputStats()

    def flush() -> None:
        nonlocal fill, batches
        t0 = time.perf_counter()
        p = pred(buf)[:fill]
        t1 = time.perf_counter()
        stage["compute"] += t1 - t0
        # Out-of-distribution codes join the frame's warnings, and the monitoring statistics
        # count the batch: one decode, vectorised passes.
        decoded = decode(buf[:fill])
        stats.add(buf[:fill], decoded, WIDTH_EVERY)
        for f, frame, extra in zip(owner_file[:fill].tolist(), owner_frame[:fill].tolist(),
                                   ood_codes(buf[:fill], pred.ood, decoded), strict=True):
            if extra:
                outcomes[f].warnings[frame].extend(extra)
        stage["ood"] += time.perf_counter() - t1
        probs.append(p.copy())
        file_idx.append(owner_file[:fill].copy())
        frame_idx.append(owner_frame[:fill].copy())
        batches += 1
        if on_batch is not None:
            on_batch({"batch": batches, "frames": fill, "files_done": len(outcomes),
                      "files": len(files), "seconds": time.perf_counter() - t_start})
        fill = 0
        crash_point("batch")

    budget = max(1, readahead_mb) << 20
    reader = prefetch(files, lambda rel: read_input(loc, rel, max_frames), io_threads, budget)
    t0 = time.perf_counter()
    for outcome, frames in reader:
        t1 = time.perf_counter()
        stage["read_wait"] += t1 - t0
        i = len(outcomes)
        outcomes.append(outcome)
        start = 0
        while frames is not None and start < len(frames):
            take = min(bsz - fill, len(frames) - start)
            buf[fill:fill + take] = frames[start:start + take]
            owner_file[fill:fill + take] = i
            owner_frame[fill:fill + take] = np.arange(start, start + take, dtype=np.int32)
            fill += take
            start += take
            if fill == bsz:
                stage["copy"] += time.perf_counter() - t1
                flush()
                t1 = time.perf_counter()
        t0 = time.perf_counter()
        stage["copy"] += t0 - t1
    if fill:
        flush()
    total = time.perf_counter() - t_start
    width = len(pred.class_names)
    return ChunkResult(
        files=outcomes,
        file_index=np.concatenate(file_idx) if file_idx else np.zeros(0, np.int32),
        frame_index=np.concatenate(frame_idx) if frame_idx else np.zeros(0, np.int32),
        probabilities=np.concatenate(probs) if probs else np.zeros((0, width), np.float32),
        class_names=list(pred.class_names), model_version=pred.version, batches=batches,
        seconds={"load": t_loaded - t_start, **stage, "total": total},
        input_stats=stats,
    )
