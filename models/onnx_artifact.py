"""The ONNX inference artifact of a registered version: ``model.onnx`` beside ``model.keras``.

Why: classifying with ONNX Runtime gives the Keras model's logits (to about 1e-5) faster, and
a process that never imports TensorFlow saves its largest start-up cost and most of its
memory (issue 22). The artifact is only trusted when it was checked against the Keras model
it came from, so this module is the one owner of that rule:

- ``export_onnx`` converts the model (through tf2onnx, the converter Keras 3's own
  ``export(format="onnx")`` uses on TensorFlow) from its pooled inference twin
  (``models.network.pool_before_transpose``: the same numbers, a little faster) when it has
  one, else from the model itself;
- ``check_onnx`` runs the file with ONNX Runtime on check frames (the version's test split
  where it is known) and compares with the Keras logits: the largest absolute logit
  difference must be within ``TOLERANCE`` and every frame's argmax identical;
- ``build_artifact`` does both and never raises: a model whose export or check fails is
  registered without the file, and ``metadata["onnx"]`` says why;
- ``artifact_status`` tells, from the version's record alone (no TensorFlow, no ONNX
  Runtime), whether its file may be used: the engine choice reads it.

The record is ``metadata["onnx"]`` for a version registered with its file, or ``onnx.json``
beside a version that got the file later (a version's metadata is written once):
``status`` (``verified`` or ``refused``), ``reason`` (when refused), ``file``, ``sha256``,
``opset``, ``source`` (``pooled twin`` or ``model``), ``check`` (frames, where they came
from, max abs logit difference, argmax agreement, tolerance) and ``versions`` (tensorflow,
keras, tf2onnx, onnx, onnxruntime).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from models.spec import HEATMAP_SHAPE

ONNX_FILE = "model.onnx"
# A version registered before its ONNX file existed gets it later, with this record beside it
# (versions are written once: their metadata.json is never rewritten). It wins over
# ``metadata["onnx"]`` when both exist.
ONNX_RECORD = "onnx.json"
OPSET = 17
# Largest absolute logit difference accepted between ONNX Runtime and Keras. Measured on the
# deployed network: about 1e-5. A logit difference d moves softmax(z / T) by at most about
# d / (2T), so the confidences of the two engines agree within 1e-4 for T >= 0.5.
TOLERANCE = 1e-4
INPUT_NAME = "heatmaps"
VERSIONED = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime")


def export_onnx(model: Any) -> tuple[bytes, str]:
    """The model as ONNX bytes (input ``heatmaps`` ``[N,17,64,48]`` float32, logits out) and
    which graph was converted (``pooled twin`` or ``model``). Imports TensorFlow."""
    import tensorflow as tf
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    from models.network import pool_before_transpose

    patch_tf2onnx()  # tf2onnx 1.17 still uses NumPy 1 aliases; Keras's own export does this
    import tf2onnx

    twin = pool_before_transpose(model)
    net, source = (twin, "pooled twin") if twin is not None else (model, "model")
    spec = [tf.TensorSpec([None, *HEATMAP_SHAPE], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=spec)
    def logits(x: Any) -> Any:
        return net(x, training=False)

    # tf2onnx prints its progress (and unsupported ops) on stdout/stderr: kept out of --json
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        proto, _ = tf2onnx.convert.from_function(logits, input_signature=spec, opset=OPSET)
    return proto.SerializeToString(), source


def onnx_session(data: bytes | str, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session: one op at a time (the network is a chain), each op on
    ``threads`` cores (default: ``OMP_NUM_THREADS`` when set, as a local Dask cluster sets it
    to each worker's share, else the cores this process may use), worker threads that sleep
    instead of spinning between calls, so the reader threads beside it keep their cores."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    share = os.environ.get("OMP_NUM_THREADS", "")
    opts.intra_op_num_threads = int(threads or (int(share) if share.isdigit() else 0)
                                    or usable_cores())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def usable_cores() -> int:
    """The cores this process may run on (a container's limit, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def session_logits(session: Any, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of ``frames`` through an ONNX Runtime session, in batches."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: np.ascontiguousarray(frames[i:i + batch_size],
                                                          np.float32)})[0]
            for i in range(0, len(frames), batch_size)]
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)


def check_onnx(data: bytes, frames: np.ndarray, expected: np.ndarray,
               tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Compare the ONNX file's logits on ``frames`` with ``expected`` (the Keras logits).
    Returns the check's numbers and ``reason`` (None when it passed)."""
    got = session_logits(onnx_session(data), frames)
    if got.shape != expected.shape:
        return {"frames": len(frames), "reason": f"ONNX output shape {list(got.shape)} is "
                f"not the Keras model's {list(expected.shape)}"}
    diff = float(np.max(np.abs(got - expected))) if len(frames) else 0.0
    agree = float(np.mean(got.argmax(1) == expected.argmax(1))) if len(frames) else 1.0
    reason = None
    if not len(frames):
        reason = "no check frames"
    elif not np.isfinite(diff) or diff > tolerance:
        reason = f"max abs logit difference {diff:.3g} exceeds the tolerance {tolerance:g}"
    elif agree < 1.0:
        reason = f"argmax differs on {(1 - agree) * len(frames):.0f} of {len(frames)} frames"
    return {"frames": int(len(frames)), "max_abs_logit_diff": diff,
            "argmax_agreement": agree, "tolerance": tolerance, "reason": reason}


def build_artifact(model: Any, frames: np.ndarray, checked_on: str,
                   tolerance: float = TOLERANCE) -> tuple[bytes | None, dict[str, Any]]:
    """Export and check: ``(onnx bytes, metadata["onnx"])`` when verified, ``(None, the
    reason)`` otherwise. Never raises: a failed export must not fail the registration."""
    from models.network import predict_logits
    from models.registry import library_versions

    t0 = time.perf_counter()
    meta: dict[str, Any] = {"versions": library_versions(VERSIONED), "opset": OPSET}
    meta["versions"].pop("python", None)
    try:
        data, source = export_onnx(model)
    except Exception as exc:  # noqa: BLE001 - any converter failure is a recorded reason
        return None, {**meta, "status": "refused", "reason": _why("export failed", exc)}
    try:
        frames = np.asarray(frames, np.float32)
        check = check_onnx(data, frames, predict_logits(model, frames), tolerance)
    except Exception as exc:  # noqa: BLE001 - e.g. ONNX Runtime refuses the graph
        return None, {**meta, "status": "refused", "source": source,
                      "reason": _why("ONNX Runtime could not run the export", exc)}
    check["checked_on"] = checked_on
    check["seconds"] = round(time.perf_counter() - t0, 2)
    reason = check.pop("reason")
    if reason is not None:
        return None, {**meta, "status": "refused", "source": source, "check": check,
                      "reason": f"check failed: {reason}"}
    return data, {**meta, "status": "verified", "file": ONNX_FILE, "source": source,
                  "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                  "check": check}


def onnx_info(entry: Any) -> dict[str, Any] | None:
    """A registry version's ONNX record: ``onnx.json`` when a migration attached one, else
    ``metadata["onnx"]`` from its registration, else None."""
    import json

    record = entry.read_file(ONNX_RECORD)
    return json.loads(record) if record else entry.metadata.get("onnx")


def artifact_status(entry: Any) -> str | None:
    """None when the version's ONNX file may be used; else why not, in a few words. Reads
    the record (and, for a local registry, whether the file is there), never the model."""
    info = onnx_info(entry)
    if not info:
        return "no ONNX file recorded (`posebatch models export-onnx` adds one)"
    if info.get("status") != "verified":
        return str(info.get("reason") or f"ONNX status {info.get('status')!r}")
    name = str(info.get("file") or ONNX_FILE)
    if "://" not in entry.uri and not (Path(entry.uri) / name).is_file():
        return f"{name} is missing from {entry.uri}"
    return None


def _why(what: str, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{what}: {type(exc).__name__}: {first}".rstrip(": ")
