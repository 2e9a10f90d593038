"""The Keras/TensorFlow engine: the saved ``model.keras`` behind one compiled call.

The fallback for versions without a verified ONNX file, and what ``--engine keras``
chooses (``tasks.classify.engine``). Imported only when chosen: it imports TensorFlow.

Why it is shaped this way: one ``tf.function`` with a fixed input signature
``[batch_size, 17, 64, 48]``, so every call reuses one graph (``predict()`` would rebuild its
loop per call; the last batch is padded and its padding rows dropped); the batch buffer is
handed to TensorFlow without a copy (DLPack, on a 64-byte aligned buffer); the network's stem
runs pool-first (``models.network.pool_before_transpose``) when that gives the same numbers;
TensorFlow's thread pools are sized to the cores this process may use (``configure_threads``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from models.spec import HEATMAP_SHAPE
from tasks.classify.engine import aligned_zeros, is_aligned


class KerasEngine:
    """Logits from the version's Keras model, compiled once for ``batch_size`` frames.

    ``jit_compile``: XLA (the settings' ``xla``, ``POSEBATCH_XLA=1``). Measured on the
    2-core machine with the deployed network, XLA ran a batch on one core where TensorFlow's
    own kernels use both, cost about 15% more CPU per batch and half a second more to
    compile: off is the better default; try it on other hardware."""

    name = "keras"

    def __init__(self, entry: Any, batch_size: int, jit_compile: bool = False):
        import tensorflow as tf

        from models.network import pool_before_transpose
        from models.registry import load_model

        configure_threads(tf)
        model = load_model(entry)
        self.batch_size = int(batch_size)
        self.width = int(model.outputs[0].shape[-1])
        net = model
        fast = pool_before_transpose(model)
        if fast is not None:  # the same numbers, checked eagerly on a few frames, or as saved
            probe = np.random.default_rng(0).random((4, *HEATMAP_SHAPE), np.float32)
            if np.allclose(np.asarray(fast(probe, training=False)),
                           np.asarray(model(probe, training=False)), rtol=0, atol=1e-5):
                net = fast

        @tf.function(input_signature=[tf.TensorSpec([self.batch_size, *HEATMAP_SHAPE],
                                                    tf.float32)],
                     jit_compile=jit_compile, reduce_retracing=False)
        def logits(x: Any) -> Any:
            return net(x, training=False)

        logits(np.zeros((self.batch_size, *HEATMAP_SHAPE), np.float32))  # trace now, once
        self.fn = logits
        self.from_dlpack = _dlpack_importer()

    def logits(self, batch: np.ndarray, n: int) -> np.ndarray:
        x: Any = batch
        if self.from_dlpack is not None and is_aligned(batch):
            x = self.from_dlpack(batch.__dlpack__())
        return np.asarray(self.fn(x), dtype=np.float32)[:n]


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
