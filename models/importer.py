"""Importing an externally trained Keras model into the registry's input/output contract.

The classification flow feeds ``(None, 17, 64, 48)`` float32 and expects logits. Models
trained elsewhere differ: the reference project's ``trained_model.h5`` (a legacy HDF5
Sequential model) took ``[1,17,64,48]`` per sample, so its batch input was
``(None, 1, 17, 64, 48)``, and it ended in a softmax. Import wraps such a model:

- input: a leading singleton axis is added (Reshape), a channels-last ``(None,64,48,17)``
  model gets a Permute; anything else is refused with a clear error;
- output: the registry contract is logits, always (``output: "logits"`` in the metadata).
  A final softmax (a Dense layer's activation, or a Softmax/Activation layer) is removed, so
  the wrapped model outputs the true pre-softmax logits. A model whose probabilities cannot
  be traced to a final softmax gets ``log(max(p, 1e-7))`` appended: log-probabilities are
  valid logits (softmax gives ``p`` back). Either way ``softmax(output)`` reproduces the
  original model's probabilities.

The wrapped model is then checked against the original on random input before it is saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.registry import file_sha256
from models.spec import HEATMAP_SHAPE

SUPPORTED_SUFFIXES = (".keras", ".h5", ".hdf5")


class ImportError_(Exception):
    """The model cannot be imported (unreadable, unknown layout, wrong class count)."""


def _input_adapter(shape: tuple[Any, ...]) -> tuple[str, Any]:
    """How to turn ``(None,17,64,48)`` into the model's input shape: (name, layer or None)."""
    from keras import layers

    inner = tuple(shape[1:])
    if inner == HEATMAP_SHAPE:
        return "identity", None
    if inner == (1, *HEATMAP_SHAPE):
        return "add_singleton_axis", layers.Reshape((1, *HEATMAP_SHAPE), name="add_axis")
    k, h, w = HEATMAP_SHAPE
    if inner == (h, w, k):
        return "channels_last", layers.Permute((2, 3, 1), name="to_channels_last")
    raise ImportError_(f"unsupported model input shape {list(shape)}: expected "
                       f"[None,17,64,48], [None,1,17,64,48] or [None,64,48,17]")


def _strip_softmax(model: Any) -> tuple[Any, bool]:
    """Return (model with logits out, stripped?). Edits only our freshly loaded copy."""
    import keras

    last = model.layers[-1] if model.layers else None
    if last is None:
        return model, False
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", "")
    if isinstance(last, keras.layers.Dense) and name == "softmax":
        last.activation = keras.activations.linear
        return model, True
    is_softmax_layer = isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and name == "softmax")
    if is_softmax_layer and len(model.layers) > 1:
        inner = keras.Model(model.inputs, model.layers[-2].output, name=f"{model.name}_logits")
        return inner, True
    return model, False


def _looks_like_probabilities(out: np.ndarray) -> bool:
    return bool(np.all(out >= -1e-6) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def wrap_model(model: Any, n_classes: int, output: str = "auto",
               squeezed: bool = False) -> tuple[Any, dict[str, Any]]:
    """Wrap a loaded Keras model to the registry contract; return (model, facts for metadata).

    ``output``: "auto" (detect a final softmax), "probabilities" or "logits" (as declared).
    ``squeezed``: the model was loaded by ``load_external`` with its singleton axis dropped."""
    import keras

    if output not in ("auto", "probabilities", "logits"):
        raise ImportError_(f"unknown output kind {output!r}")
    in_shape = tuple(model.input_shape)
    out_shape = tuple(model.output_shape)
    if out_shape[-1] != n_classes:
        raise ImportError_(f"the model has {out_shape[-1]} outputs but {n_classes} class "
                           "names were given")
    rng = np.random.default_rng(0)
    probe = rng.random((4, *HEATMAP_SHAPE), dtype=np.float32) * 0.1
    probe[:, :, 30:34, 20:24] = 0.9  # a few peaks, so the probe is not all background
    adapter_name, adapter = _input_adapter(in_shape)
    as_model_input = probe.reshape((4, *in_shape[1:])) if adapter_name != "channels_last" \
        else probe.transpose(0, 2, 3, 1)
    original = np.asarray(model(as_model_input, training=False))

    transform = "none"
    core = model
    if output in ("auto", "probabilities"):
        core, stripped = _strip_softmax(model)
        if stripped:
            transform = "softmax_removed"
        elif output == "probabilities" or _looks_like_probabilities(original):
            transform = "log_probabilities"

    inputs = keras.Input(shape=HEATMAP_SHAPE, dtype="float32", name="heatmaps")
    x = inputs if adapter is None else adapter(inputs)
    outputs = core(x)
    if transform == "log_probabilities":
        outputs = keras.ops.log(keras.ops.maximum(outputs, 1e-7))
    wrapped = keras.Model(inputs, outputs, name="imported")

    got = np.asarray(wrapped(probe, training=False), dtype=np.float64)
    if transform == "none":
        check = got
    else:
        z = np.exp(got - got.max(axis=1, keepdims=True))
        check = z / z.sum(axis=1, keepdims=True)
    if not np.allclose(check, original, atol=1e-4):
        raise ImportError_("the wrapped model does not reproduce the original's outputs")
    source_shape = [None if d is None else int(d) for d in in_shape]
    if squeezed:
        source_shape = [source_shape[0], 1, *source_shape[1:]]
        adapter_name = "singleton_axis_squeezed"
    facts = {"source_input_shape": source_shape,
             "input_adapter": adapter_name,
             "source_output": "logits" if transform == "none" else "probabilities",
             "output_transform": transform,
             "output": "logits"}
    return wrapped, facts


def _squeeze_singleton(obj: Any) -> bool:
    """Rewrite declared input shapes ``(None,1,17,64,48)`` to ``(None,17,64,48)`` in place."""
    changed = False
    if isinstance(obj, dict):
        for key in ("batch_input_shape", "batch_shape", "build_input_shape"):
            v = obj.get(key)
            if isinstance(v, list) and len(v) == 5 and v[1] == 1 \
                    and tuple(v[2:]) == HEATMAP_SHAPE:
                obj[key] = [v[0], *v[2:]]
                changed = True
        for v in obj.values():
            changed = _squeeze_singleton(v) or changed
    elif isinstance(obj, list):
        for v in obj:
            changed = _squeeze_singleton(v) or changed
    return changed


def _load_squeezed_h5(path: Path) -> Any | None:
    """Load a legacy ``.h5`` whose layers were applied to ``(None,1,17,64,48)``.

    tf.keras 2 ran Conv2D on that 5-D input by treating the leading axes as batch axes (the
    reference project's model did); Keras 3 refuses 5-D input to Conv2D. Dropping the
    singleton axis from the declared shapes gives the identical computation (same weights,
    same flatten order), so the file is loaded from a patched copy. None if not applicable."""
    import json
    import shutil
    import tempfile

    import h5py
    import keras

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    if raw is None:
        return None
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if not _squeeze_singleton(config):
        return None
    with tempfile.TemporaryDirectory(prefix="posebatch-import-") as tmp:
        copy = Path(tmp) / "model.h5"
        shutil.copyfile(path, copy)
        with h5py.File(copy, "r+") as f:
            f.attrs["model_config"] = json.dumps(config)
        return keras.models.load_model(copy, compile=False)


def load_external(path: Path | str) -> tuple[Any, bool]:
    """Load a ``.keras`` or legacy ``.h5`` model without compiling (safe mode stays on).

    Returns ``(model, squeezed)``: ``squeezed`` is true when a reference-style ``.h5``
    declared ``(None,1,17,64,48)`` and was loaded on ``(None,17,64,48)`` instead."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path} does not exist")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ImportError_(f"{path.name}: expected a .keras or .h5 file")
    try:
        return keras.models.load_model(path, compile=False), False
    except Exception as exc:  # Keras raises many types for unreadable files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        error = f"cannot load {path.name}: {type(exc).__name__}: {first}"
    if path.suffix.lower() in (".h5", ".hdf5"):
        try:
            model = _load_squeezed_h5(path)
        except Exception:  # not HDF5 at all, or still unloadable: report the first error
            model = None
        if model is not None:
            return model, True
    raise ImportError_(error)


def import_into_registry(registry: Any, path: Path | str, class_names: list[str],
                         output: str = "auto", promote: bool = False,
                         inference: Any = None) -> tuple[Any, bool]:
    """Load, wrap, verify and register an external model; return (entry, promoted).
    ``inference(model) -> (extra files, metadata fields)``: the inference artifact made at
    registration (the CLI passes ``tasks.train.inference_artifact``'s ONNX export).

    Promoted when asked, or when the registry has no production model yet (a registry with
    one model should be usable by the classification flow right away)."""
    from models.network import INPUT_LAYOUT
    from models.registry import library_versions

    path = Path(path)
    model, squeezed = load_external(path)
    wrapped, facts = wrap_model(model, len(class_names), output, squeezed)
    versions = library_versions(("keras", "tensorflow", "tensorflow-cpu", "numpy"))
    metadata = {
        "class_names": list(class_names),
        "input_layout": INPUT_LAYOUT,
        "output": "logits",
        "temperature": 1.0,
        "metrics": {},
        "params": {},
        "data_fingerprint": None,
        "library_versions": versions,
        "source": "import",
        "import": {"path": str(path.resolve()), "file_sha256": file_sha256(path),
                   "format": "h5" if path.suffix.lower() in (".h5", ".hdf5") else "keras",
                   **facts},
    }
    files: dict[str, bytes] = {}
    if inference is not None:
        files, fields = inference(wrapped)
        metadata.update(fields)
    entry = registry.register(wrapped, metadata, extra_files=files,
                              report=f"# Imported model\n\nFrom `{path.name}` "
                                     f"(sha256 `{metadata['import']['file_sha256']}`).\n\n"
                                     f"- input adapter: {facts['input_adapter']}\n"
                                     f"- output transform: {facts['output_transform']}\n"
                                     "- no training data or test metrics are known; the next "
                                     "`posebatch retrain` re-evaluates it on its test split.\n")
    do_promote = promote or registry.production_version() is None
    if do_promote:
        registry.set_production(entry.version, f"imported from {path.name}"
                                + ("" if promote else " (first model in the registry)"),
                                action="import")
    return entry, do_promote
