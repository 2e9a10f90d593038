"""The registry (models/registry.py): versions, the production alias, promotion history and
rollback. Real Keras models are saved and loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.registry import Registry, RegistryError, load_model
from models.spec import HEATMAP_SHAPE, class_names
from tests.support.models import tiny_cnn


def _meta(f1: float) -> dict:
    return {"class_names": class_names(), "temperature": 1.5,
            "metrics": {"test": {"macro_f1": f1}}}


@pytest.fixture(scope="module")
def model():
    return tiny_cnn()


def test_register_resolve_load_roundtrip(tmp_path: Path, model) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(RegistryError, match="no production model"):
        reg.resolve()
    entry = reg.register(model, _meta(0.5), report="# hi", extra_files={"x.bin": b"1"})
    assert entry.version == "v0001" and reg.versions() == ["v0001"]
    assert (entry.path / "report.md").read_text() == "# hi"
    assert (entry.path / "x.bin").read_bytes() == b"1"
    assert entry.metadata["created_at"] and entry.temperature == 1.5
    assert reg.production_version() is None  # registering never promotes
    loaded = load_model(reg.get("v0001"))
    x = np.random.default_rng(0).random((2, *HEATMAP_SHAPE), dtype=np.float32)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)
    with pytest.raises(RegistryError, match="no model version 'v0009'"):
        reg.get("v0009")


def test_promotion_history_and_rollback_chain(tmp_path: Path, model) -> None:
    reg = Registry(tmp_path)
    v1, v2, v3 = (reg.register(model, _meta(f)).version for f in (0.5, 0.6, 0.7))
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    reg.promote(v1, "first")
    reg.promote(v2, "better")
    reg.promote(v3, "better still")
    assert reg.resolve().version == v3
    history_before = (tmp_path / "history.jsonl").read_text()

    assert reg.rollback(reason="v3 misbehaves") == (v3, v2)
    assert reg.resolve("production").version == v2
    assert reg.rollback() == (v2, v1)  # walks back down the promotion chain
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    assert reg.rollback(to=v3) == (v1, v3)
    with pytest.raises(RegistryError, match="already the production"):
        reg.rollback(to=v3)

    text = (tmp_path / "history.jsonl").read_text()
    assert text.startswith(history_before)  # append-only: earlier lines never rewritten
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["action"], r["from"], r["to"]) for r in records] == [
        ("promote", None, v1), ("promote", v1, v2), ("promote", v2, v3),
        ("rollback", v3, v2), ("rollback", v2, v1), ("rollback", v1, v3)]
    assert records[3]["why"] == "v3 misbehaves"
    assert all(r["who"] and r["at"] for r in records)
    assert json.loads((tmp_path / "production.json").read_text()) == {"version": v3}


def test_incomplete_versions_are_ignored(tmp_path: Path, model) -> None:
    reg = Registry(tmp_path)
    reg.register(model, _meta(0.5))
    (tmp_path / "versions" / "v0002").mkdir()  # a crashed registration: no metadata.json
    assert reg.versions() == ["v0001"]
    assert reg.register(model, _meta(0.6)).version == "v0003"
    assert [e.version for e in reg.entries()] == ["v0001", "v0003"]
    with pytest.raises(RegistryError):
        reg.promote("v0002", "incomplete")


def test_promoting_production_again_is_refused_and_rollback_still_works(tmp_path: Path,
                                                                         model) -> None:
    reg = Registry(tmp_path)
    v1, v2 = (reg.register(model, _meta(f)).version for f in (0.5, 0.6))
    reg.promote(v1, "first")
    reg.promote(v2, "better")
    with pytest.raises(RegistryError, match="already the production model"):
        reg.promote(v2, "again")
    assert reg.rollback() == (v2, v1)


def test_a_torn_history_line_is_skipped_and_never_rewritten(tmp_path: Path, model) -> None:
    reg = Registry(tmp_path)
    v1, v2 = (reg.register(model, _meta(f)).version for f in (0.5, 0.6))
    reg.promote(v1, "first")
    path = tmp_path / "history.jsonl"
    with open(path, "a", encoding="utf-8") as fh:  # a crash in the middle of an append
        fh.write('{"at": "2026-01-01", "action": "prom')
    torn = path.read_text()
    assert [h["to"] for h in reg.history()] == [v1]
    reg.promote(v2, "better")
    assert path.read_text().startswith(torn)  # appended after, nothing rewritten
    assert [h["to"] for h in reg.history()] == [v1, v2]
    assert reg.rollback() == (v2, v1)


_CHURN = """
import random, sys
from models.registry import Registry, RegistryError
reg, seed = Registry(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(seed)
for _ in range(40):
    try:
        if rnd.random() < 0.6:
            reg.promote(rnd.choice(reg.versions()), f"proc {seed}")
        else:
            reg.rollback(reason=f"proc {seed}")
    except RegistryError:
        pass  # already production / nothing to roll back to: fine under churn
"""


def test_concurrent_promotions_and_rollbacks_keep_one_chain(tmp_path: Path, model) -> None:
    """Six real processes promote and roll back at random, 40 operations each: every
    history record's ``from`` is the previous record's ``to``, and the alias is the last."""
    import subprocess
    import sys

    reg = Registry(tmp_path)
    for f1 in (0.5, 0.6, 0.7, 0.8):
        reg.register(model, _meta(f1))
    reg.promote("v0001", "start")
    procs = [subprocess.Popen([sys.executable, "-c", _CHURN, str(tmp_path), str(i)])
             for i in range(6)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 6
    history = reg.history()
    assert len(history) > 40  # they really interleaved: many changes went through
    for before, after in zip(history, history[1:], strict=False):
        assert after["from"] == before["to"], (before, after)
    assert reg.production_version() == history[-1]["to"]


def test_promotion_with_an_expected_production_is_a_compare_and_swap(tmp_path: Path,
                                                                      model) -> None:
    from models.registry import ProductionChanged

    reg = Registry(tmp_path)
    for f1 in (0.5, 0.6, 0.7):
        reg.register(model, _meta(f1))
    reg.promote("v0001", "first", expected_production=None)
    reg.promote("v0002", "gate said v0002 beats v0001", expected_production="v0001")
    reg.rollback(reason="operator")  # back to v0001 while v0003 was training
    with pytest.raises(ProductionChanged, match="from v0002 to v0001"):
        reg.promote("v0003", "gate said v0003 beats v0002", expected_production="v0002")
    assert reg.production_version() == "v0001"
    assert [h["to"] for h in reg.history()] == ["v0001", "v0002", "v0001"]


def test_attach_adds_files_and_metadata_to_a_version(tmp_path: Path, model) -> None:
    reg = Registry(tmp_path)
    entry = reg.register(model, {"class_names": class_names(), "temperature": 1.3})
    after = reg.attach(entry.version, {"model.onnx": b"bytes"}, {"onnx": {"status": "x"}})
    assert (entry.path / "model.onnx").read_bytes() == b"bytes"
    again = reg.get(entry.version)
    assert again.metadata == after.metadata
    assert again.metadata["onnx"] == {"status": "x"} and again.temperature == 1.3
    for bad in ("model.keras", "metadata.json", "../escape.onnx"):
        with pytest.raises(RegistryError, match="cannot attach"):
            reg.attach(entry.version, {bad: b""}, {})
