"""Inference engines: one small interface, two backends (ONNX Runtime and Keras/TensorFlow).

An engine turns a batch buffer ``[batch_size, 17, 64, 48]`` float32 into logits; the
predictor (``tasks.classify.infer``) applies the version's temperature to them with one
NumPy softmax (``probabilities``) whatever the engine, so calibration and the monitoring
statistics see the engine's own logits and confidences agree across engines to the
logits' difference (checked at registration: ``models.onnx_artifact``).

Which engine (``choose_engine``, decided once per run in the flow process, from the
version's metadata and files only, so every thread and Dask worker uses the same one):

- ``onnx``: the version's verified ``model.onnx`` through ONNX Runtime. This module and
  ``OnnxEngine`` never import TensorFlow or Keras: a classify or rescore run on ONNX keeps
  them out of the CLI process, the flow, its threads and the Dask workers
  (``tests/tasks/classify/test_no_tensorflow.py`` proves it in a fresh process).
- ``keras``: the saved Keras model (``tasks.classify.keras_engine``), imported only when
  chosen.
- ``auto`` (the default, ``POSEBATCH_ENGINE``): ``onnx`` when the version has a verified
  file, else ``keras``, with the reason logged. Asking for ``onnx`` on a version without a
  verified file is refused in one line (``EngineError``), never silently run on Keras.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import numpy as np

from models.onnx_artifact import ONNX_FILE, artifact_status, onnx_info, onnx_session

ENGINES = ("auto", "keras", "onnx")
# Frames per ONNX Runtime call. Its arena keeps the largest call's activations for the
# life of the session (the keypoint branch holds several full-size copies of the input):
# about 220 MB at 256 frames, 112 MB at 128, 56 MB at 64. CPU per frame is the same
# within noise; at 64 the extra calls cost wall time on a loaded machine (4,096 frames at
# load 8.5-9: the model's seconds 6.6-8.7 at 64, 4.6-4.8 at 128, 4.9-5.8 at 256;
# bench/bench_engines.py).
ONNX_CALL_FRAMES = 128
ALIGN = 64  # TensorFlow's CPU kernels require (and check) 64-byte aligned tensor memory


class EngineError(ValueError):
    """The engine asked for cannot run this version (one line for the user)."""


class Engine(Protocol):
    """What the predictor needs from a backend."""

    name: str
    batch_size: int
    width: int  # logits per frame

    def logits(self, batch: np.ndarray, n: int) -> np.ndarray:
        """Logits ``[n, width]`` float32 of the first ``n`` rows of ``batch`` (a buffer of
        ``batch_size`` rows; the rest is padding the engine may compute or skip). The call is
        synchronous: the caller may overwrite ``batch`` once it returns."""
        ...


def choose_engine(entry: Any, requested: str = "auto") -> tuple[str, str]:
    """``(engine, why)`` for a registry version; reads metadata and files only."""
    if requested not in ENGINES:
        raise EngineError(f"unknown engine {requested!r}: choose one of {', '.join(ENGINES)}")
    why_not = artifact_status(entry)
    if requested == "keras":
        return "keras", "asked for"
    if requested == "onnx":
        if why_not:
            raise EngineError(f"model {entry.version} cannot run on onnx: {why_not}")
        return "onnx", "asked for"
    if why_not:
        return "keras", f"fallback: {why_not}"
    return "onnx", "verified ONNX file"


def open_engine(entry: Any, name: str, batch_size: int, jit_compile: bool = False) -> Engine:
    """Load the named engine for a registry version (``name`` from ``choose_engine``)."""
    if name == "onnx":
        return OnnxEngine(entry, batch_size)
    if name == "keras":
        from tasks.classify.keras_engine import KerasEngine

        return KerasEngine(entry, batch_size, jit_compile)
    raise EngineError(f"unknown engine {name!r}: choose one of keras, onnx")


class OnnxEngine:
    """The version's verified ``model.onnx`` in an ONNX Runtime session. The file's SHA-256
    must be the one recorded when it was checked: a file changed since is refused."""

    name = "onnx"

    def __init__(self, entry: Any, batch_size: int):
        why_not = artifact_status(entry)
        if why_not:
            raise EngineError(f"model {entry.version} cannot run on onnx: {why_not}")
        info = onnx_info(entry) or {}
        data = entry.read_file(str(info.get("file") or ONNX_FILE))  # local or s3://
        if data is None:
            raise EngineError(f"model {entry.version}: {ONNX_FILE} is missing")
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise EngineError(f"model {entry.version}: {ONNX_FILE} does not match the SHA-256 "
                              "recorded when it was checked (run `posebatch models "
                              "export-onnx --force`)")
        self.session = onnx_session(data)
        self.input = self.session.get_inputs()[0].name
        self.batch_size = int(batch_size)
        self.width = int(self.session.get_outputs()[0].shape[-1])

    def logits(self, batch: np.ndarray, n: int) -> np.ndarray:
        # The graph takes any batch size: the last, partial batch computes only its rows,
        # and a batch runs in slices of ONNX_CALL_FRAMES (see there).
        step = ONNX_CALL_FRAMES
        parts = [self.session.run(None, {self.input: batch[i:min(n, i + step)]})[0]
                 for i in range(0, n, step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` in float32, row by row: the one place a temperature is applied
    at classification time, for every engine."""
    z = np.asarray(logits, np.float32) / np.float32(temperature)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


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
