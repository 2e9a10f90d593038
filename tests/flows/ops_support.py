"""Helpers shared by the operations tests (serve, watch, doctor, deployments, runners)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.dataset as ds

from models.registry import Registry
from tasks.generate import generate_dataset
from tasks.spec import class_names


def register_tiny_model(registry_dir: Path) -> str:
    """Register and promote a small untrained CNN: real Keras, real registry, fast to load."""
    from models.network import build_cnn

    names = class_names()
    model = build_cnn(len(names), filters=(8, 8), dense=16)
    entry = Registry(registry_dir).register(model, {
        "class_names": names,
        "input_layout": {"shape": [None, 17, 64, 48], "axes": ["batch", "keypoint", "y", "x"]},
        "temperature": 1.0, "metrics": {}, "params": {"tiny": True},
    })
    Registry(registry_dir).set_production(entry.version, reason="test model")
    return entry.version


def make_batches(root: Path, batches: int, per_batch: int, seed: int) -> Path:
    """Generate ``incoming/batch_<k>/`` folders (each with ``_SUCCESS``) under ``root``."""
    generate_dataset(root, per_class=0, seed=seed, incoming_batches=batches,
                     incoming_per_batch=per_batch)
    return root / "incoming"


def move_batch_in(src_batch: Path, input_dir: Path, name: str | None = None) -> Path:
    """Publish a finished batch into ``input_dir`` in one rename (how writers should do it)."""
    dst = input_dir / (name or src_batch.name)
    input_dir.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src_batch), str(dst))
    return dst


def predictions(output_dir: Path):
    """The predictions dataset as a table (empty table if nothing was written yet)."""
    path = output_dir / "predictions"
    if not path.exists():
        return None
    return ds.dataset(path, format="parquet", partitioning="hive").to_table()


def npy_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.npy"))
