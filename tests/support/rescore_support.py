"""A registry with a second model version beside the session's production one, for the
re-scoring tests (tests/flows, tests/flows/cli)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.dataset as ds

from models.registry import Registry


def two_versions(registry_dir: Path, dest: Path) -> tuple[Path, str, str]:
    """A copy of ``registry_dir`` plus an unpromoted version with other weights; returns
    (registry, production version, new version)."""
    from models.network import build_cnn
    from tests.support.classify_support import TEMPERATURE, class_names

    shutil.copytree(registry_dir, dest)
    reg = Registry(dest)
    old = reg.production_version()
    import keras

    keras.utils.set_random_seed(99)
    model = build_cnn(len(class_names()), filters=(8, 16, 16), dense=32)
    new = reg.register(model, {"class_names": class_names(), "temperature": TEMPERATURE * 2})
    return dest, old, new.version


def rows_by_version(out: Path) -> dict[str, list[tuple[str, int, str]]]:
    """Prediction rows' (source_path, frame_index, sha256) per model version, sorted."""
    table = ds.dataset(out / "predictions", partitioning="hive").to_table(
        columns=["source_path", "frame_index", "content_sha256", "model_version"])
    out_: dict[str, list[tuple[str, int, str]]] = {}
    for p, f, s, v in zip(*(table[c].to_pylist() for c in table.column_names), strict=True):
        out_.setdefault(v, []).append((p, f, s))
    return {v: sorted(keys) for v, keys in out_.items()}
