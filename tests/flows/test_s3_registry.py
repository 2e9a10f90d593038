"""A registry on object storage through the product's entry points: ``posebatch models
import|list|promote|rollback|history --registry s3://...`` (the real CLI app) and a real
classification flow that loads its model from that registry on "another machine" (its own
cache folder), on the session's moto server."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from flows.cli import app
from models.registry import Registry
from tests.support.models import tiny_cnn
from tests.support.ops import make_batches


def _models(*args: str) -> dict:
    res = CliRunner().invoke(app, ["models", *args, "--json"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_models_commands_and_a_classification_on_an_s3_registry(
        s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        prefect_server) -> None:
    from flows.classify import classify_flow

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "trainer-cache"))
    model_file = tmp_path / "m.keras"
    tiny_cnn().save(model_file)
    reg = f"s3://{s3_bucket}/team/registry"
    first = _models("import", str(model_file), "--registry", reg)
    second = _models("import", str(model_file), "--registry", reg)
    assert (first["version"], first["promoted"]) == ("v0001", True)
    assert second["version"] == "v0002" and second["path"] == f"{reg}/versions/v0002"
    listed = _models("list", "--registry", reg)
    assert listed["registry"] == reg and listed["production"] == "v0001"
    assert _models("promote", "v0002", "--registry", reg)["to"] == "v0002"
    assert _models("rollback", "--registry", reg)["to"] == "v0001"
    history = _models("history", "--registry", reg)
    assert [(h["from"], h["to"]) for h in history["history"]] == [
        (None, "v0001"), ("v0001", "v0002"), ("v0002", "v0001")]
    assert not (Path.cwd() / "s3:").exists()

    # Another machine: nothing local but its own cache; the model comes from the bucket.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "worker-cache"))
    monkeypatch.setenv("POSEBATCH_XLA", "0")
    inp = make_batches(tmp_path / "site", batches=1, per_batch=4, seed=5)
    summary = classify_flow(input_dir=str(inp), output_dir=str(tmp_path / "out"),
                            registry_dir=reg, batch_size=8, quiet_seconds=0)
    assert summary["classified"] == 4
    rows = ds.dataset(tmp_path / "out" / "predictions", partitioning="hive").to_table()
    sha = Registry(reg).get("v0001").metadata["files"]["model.keras"]
    assert set(rows.column("model_sha256").to_pylist()) == {sha}
    # the engine's file came from the bucket: ONNX read and hash-checked (``auto`` picks it
    # for a version with a verified model.onnx), or the Keras file through the local cache
    assert summary["engine"] in ("onnx", "keras"), summary
    if summary["engine"] == "keras":
        assert list((tmp_path / "worker-cache").rglob("model.keras"))
    summary = classify_flow(input_dir=str(inp), output_dir=str(tmp_path / "out2"),
                            registry_dir=reg, batch_size=8, quiet_seconds=0, engine="keras")
    assert summary["classified"] == 4
    assert list((tmp_path / "worker-cache").rglob("model.keras"))
