"""The ONNX artifact at registration and for versions registered before it existed.

``models.onnx_artifact`` exports and checks; this module picks the frames the check runs on
and attaches the result to a version:

- a retrained version is checked on its own test split (``split_check_frames``, at most
  ``CHECK_CAP`` frames spread over the split);
- an imported version, or one migrated by ``posebatch models export-onnx``, has no test
  split the registry keeps, so it is checked on frames of our generator
  (``synthetic_check_frames``: every class, clean and hard, a fixed seed). The check
  compares two engines on one model, so any realistic heatmaps serve; ``check.checked_on``
  in the metadata says which frames were used.

Either way a failed export or check is recorded in ``metadata["onnx"]`` with its reason and
the version stays usable on Keras; nothing here raises for a model that does not convert.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np

from models.onnx_artifact import ONNX_FILE, ONNX_RECORD, build_artifact, onnx_info
from models.registry import Registry, RegistryError, load_model
from models.spec import class_names

CHECK_CAP = 1024       # frames the check runs at most (about a second on 2 cores)
SYNTHETIC_PER_CLASS = 8
SYNTHETIC_SEED = 22


def split_check_frames(scan: Any, idx: list[int], max_frames: int,
                      cap: int = CHECK_CAP) -> np.ndarray:
    """The test split's frames, at most ``cap`` of them evenly spread over the split (only
    the files needed are read)."""
    from tasks.train.dataset import load_frames

    idx = list(idx)
    if len(idx) > cap:
        idx = [idx[i] for i in np.linspace(0, len(idx) - 1, cap).astype(int)]
    frames, _ = load_frames(scan, idx, max_frames)
    if len(frames) > cap:
        frames = frames[np.linspace(0, len(frames) - 1, cap).astype(int)]
    return np.ascontiguousarray(frames, np.float32)


@lru_cache(maxsize=2)
def synthetic_check_frames(per_class: int = SYNTHETIC_PER_CLASS,
                           seed: int = SYNTHETIC_SEED) -> tuple[np.ndarray, str]:
    """Generated frames of every class, half clean and half hard, and how to name them
    (made once per process: a migration checks every version on the same frames)."""
    from tasks.synth.generate import synth_frames

    labels = [name for name in class_names() for _ in range(per_class)]
    frames = np.concatenate([synth_frames(labels, seed=seed),
                             synth_frames(labels, seed=seed + 1, hard=True)])
    frames.flags.writeable = False
    return frames, (f"synthetic: {len(frames)} generated frames (every class, clean and "
                    f"hard, seed {seed}); no test split is kept for this version")


def artifact_for(model: Any, frames: np.ndarray, checked_on: str
                 ) -> tuple[dict[str, bytes], dict[str, Any]]:
    """``(extra files, metadata fields)`` to register with a model: ``model.onnx`` when it
    passed the check, and ``{"onnx": ...}`` either way."""
    data, meta = build_artifact(model, frames, checked_on)
    return ({ONNX_FILE: data} if data is not None else {}), {"onnx": meta}


def export_version(registry: Registry, version: str, force: bool = False,
                   model: Any = None) -> dict[str, Any]:
    """Give an existing version its ONNX artifact, or a recorded reason why not.

    A version is written once, so the file and its record (``onnx.json``, the metadata the
    registration would have written) are attached beside it, the record last. A version
    that has a record (verified or refused) is kept, unless ``force`` (a local registry
    replaces both; object storage keeps what was written once and says so). Returns one line
    of the migration's report: version, status, reason, the check's numbers."""
    entry = registry.get(version)
    known = onnx_info(entry)
    if known and not force:
        return {"version": version, "status": "kept", **_numbers(known),
                "onnx": known.get("status")}
    model = model if model is not None else load_model(entry)
    frames, checked_on = synthetic_check_frames()
    files, fields = artifact_for(model, frames, checked_on)
    info = fields["onnx"]
    try:
        for name, data in files.items():
            registry.attach(version, name, data)
        registry.attach(version, ONNX_RECORD, json.dumps(info, indent=2).encode())
    except RegistryError as exc:  # e.g. object storage: written once
        return {"version": version, "status": "failed", **_numbers(info),
                "reason": str(exc)}
    return {"version": version, "status": info["status"], **_numbers(info)}


def _numbers(info: dict[str, Any]) -> dict[str, Any]:
    check = info.get("check") or {}
    return {"reason": info.get("reason"), "sha256": info.get("sha256"),
            "max_abs_logit_diff": check.get("max_abs_logit_diff"),
            "argmax_agreement": check.get("argmax_agreement"),
            "frames": check.get("frames")}
