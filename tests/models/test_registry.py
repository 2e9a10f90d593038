"""The registry (models/registry.py): versions, the production alias, promotion history and
rollback. One suite, run against both stores: a local folder and ``s3://`` on the session's
moto server (real HTTP, real conditional writes). Real Keras models are saved and loaded."""

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


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A registry location on each backend; fetched model files cache under tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if request.param == "local":
        return str(tmp_path / "registry")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/team/registry"


def test_register_resolve_load_roundtrip(root: str, model) -> None:
    reg = Registry(root)
    with pytest.raises(RegistryError, match="no production model"):
        reg.resolve()
    entry = reg.register(model, _meta(0.5), report="# hi", extra_files={"x.bin": b"1"})
    assert entry.version == "v0001" and reg.versions() == ["v0001"]
    assert reg.read_file("v0001", "report.md") == b"# hi"
    assert (reg.get("v0001").path / "x.bin").read_bytes() == b"1"
    assert set(entry.metadata["files"]) == {"model.keras", "report.md", "x.bin"}
    assert entry.metadata["created_at"] and entry.temperature == 1.5
    assert reg.production_version() is None  # registering never promotes
    loaded = load_model(reg.get("v0001"))
    x = np.random.default_rng(0).random((2, *HEATMAP_SHAPE), dtype=np.float32)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)
    with pytest.raises(RegistryError, match="no model version 'v0009'"):
        reg.get("v0009")


def test_promotion_history_and_rollback_chain(root: str, model) -> None:
    reg = Registry(root)
    v1, v2, v3 = (reg.register(model, _meta(f)).version for f in (0.5, 0.6, 0.7))
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    reg.promote(v1, "first")
    reg.promote(v2, "better")
    reg.promote(v3, "better still")
    assert reg.resolve().version == v3

    assert reg.rollback(reason="v3 misbehaves") == (v3, v2)
    assert reg.resolve("production").version == v2
    assert reg.rollback() == (v2, v1)  # walks back down the promotion chain
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    assert reg.rollback(to=v3) == (v1, v3)
    with pytest.raises(RegistryError, match="already the production"):
        reg.rollback(to=v3)

    records = reg.history()
    assert [(r["action"], r["from"], r["to"]) for r in records] == [
        ("promote", None, v1), ("promote", v1, v2), ("promote", v2, v3),
        ("rollback", v3, v2), ("rollback", v2, v1), ("rollback", v1, v3)]
    assert records[3]["why"] == "v3 misbehaves"
    assert all(r["who"] and r["at"] for r in records)
    assert reg.production_version() == v3 and Registry(root).history() == records


def test_incomplete_versions_are_ignored(root: str, model) -> None:
    reg = Registry(root)
    reg.register(model, _meta(0.5))
    assert reg.store.claim_version("v0002")  # a crashed registration: no metadata.json
    assert not reg.store.claim_version("v0002")  # a name is claimed once
    assert reg.versions() == ["v0001"]
    assert reg.register(model, _meta(0.6)).version == "v0003"
    assert [e.version for e in reg.entries()] == ["v0001", "v0003"]
    with pytest.raises(RegistryError):
        reg.promote("v0002", "incomplete")


def test_promoting_production_again_is_refused_and_rollback_still_works(root: str,
                                                                         model) -> None:
    reg = Registry(root)
    v1, v2 = (reg.register(model, _meta(f)).version for f in (0.5, 0.6))
    reg.promote(v1, "first")
    reg.promote(v2, "better")
    with pytest.raises(RegistryError, match="already the production model"):
        reg.promote(v2, "again")
    assert reg.rollback() == (v2, v1)


def test_local_history_is_append_only(tmp_path: Path, model) -> None:
    reg = Registry(tmp_path)
    v1, v2 = (reg.register(model, _meta(f)).version for f in (0.5, 0.6))
    reg.promote(v1, "first")
    before = (tmp_path / "history.jsonl").read_text()
    reg.promote(v2, "better")
    reg.rollback()
    text = (tmp_path / "history.jsonl").read_text()
    assert text.startswith(before)  # earlier lines never rewritten
    assert [json.loads(line)["to"] for line in text.splitlines()] == [v1, v2, v1]
    assert json.loads((tmp_path / "production.json").read_text()) == {"version": v1}


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
for _ in range(int(sys.argv[3])):
    try:
        if rnd.random() < 0.6:
            reg.promote(rnd.choice(reg.versions()), f"proc {seed}")
        else:
            reg.rollback(reason=f"proc {seed}")
    except RegistryError:
        pass  # already production / nothing to roll back to: fine under churn
"""


def test_concurrent_promotions_and_rollbacks_keep_one_chain(root: str, model) -> None:
    """Six real processes promote and roll back at random (40 operations each locally, 8
    against S3): every history record's ``from`` is the previous record's ``to``, and the
    alias is the last. On S3 nothing but the conditional writes orders them."""
    import subprocess
    import sys

    ops = 40 if "://" not in root else 8
    reg = Registry(root)
    for f1 in (0.5, 0.6, 0.7, 0.8):
        reg.register(model, _meta(f1))
    reg.promote("v0001", "start")
    procs = [subprocess.Popen([sys.executable, "-c", _CHURN, root, str(i), str(ops)])
             for i in range(6)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 6
    history = reg.history()
    assert len(history) > ops  # they really interleaved: many changes went through
    for before, after in zip(history, history[1:], strict=False):
        assert after["from"] == before["to"], (before, after)
    assert reg.production_version() == history[-1]["to"]


def test_promotion_with_an_expected_production_is_a_compare_and_swap(root: str,
                                                                      model) -> None:
    from models.registry import ProductionChanged

    reg = Registry(root)
    for f1 in (0.5, 0.6, 0.7):
        reg.register(model, _meta(f1))
    reg.promote("v0001", "first", expected_production=None)
    reg.promote("v0002", "gate said v0002 beats v0001", expected_production="v0001")
    reg.rollback(reason="operator")  # back to v0001 while v0003 was training
    with pytest.raises(ProductionChanged, match="from v0002 to v0001"):
        reg.promote("v0003", "gate said v0003 beats v0002", expected_production="v0002")
    assert reg.production_version() == "v0001"
    assert [h["to"] for h in reg.history()] == ["v0001", "v0002", "v0001"]


def test_a_change_that_died_before_the_alias_is_completed_by_the_next(root: str,
                                                                      model) -> None:
    """A writer that created its history record and died before swapping the alias: the
    alias lags one change; the next change moves it first, and the chain stays one line."""
    reg = Registry(root)
    for f1 in (0.5, 0.6, 0.7):
        reg.register(model, _meta(f1))
    reg.promote("v0001", "first")
    assert reg.store.add_record(2, {"at": "x", "who": "ghost", "action": "promote",
                                    "from": "v0001", "to": "v0002", "why": "died"})
    assert reg.production_version() == "v0001"  # readers see the last completed change
    reg.promote("v0003", "after the crash")
    assert [(h["from"], h["to"]) for h in reg.history()] == [
        (None, "v0001"), ("v0001", "v0002"), ("v0002", "v0003")]
    assert reg.production_version() == "v0003"
    assert reg.rollback() == ("v0003", "v0002")


def test_unknown_url_schemes_are_refused_not_made_local(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for bad in ("gs://b/r", Path("s3://b/r")):  # a Path has already lost the "//"
        with pytest.raises(RegistryError, match="local folder or s3://"):
            Registry(bad)
    assert list(tmp_path.iterdir()) == []


def test_s3_versions_are_written_once_and_the_alias_swaps_only_on_its_etag(
        s3_bucket: str, tmp_path: Path, model, monkeypatch: pytest.MonkeyPatch) -> None:
    """The conditions are really sent and really honoured by the server (412)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    reg = Registry(f"s3://{s3_bucket}/reg")
    entry = reg.register(model, _meta(0.5))
    with pytest.raises(RegistryError, match="written once"):
        reg.store.put_version(entry.version, entry.path, entry.metadata)
    assert reg.store.swap_alias("v0001", None)          # created: no alias before
    stale = reg.store.read_alias()[1]
    assert not reg.store.swap_alias("v0001", None)      # If-None-Match on an existing alias
    assert reg.store.swap_alias("v0001", stale)
    assert not reg.store.swap_alias("v0001", stale)     # If-Match with a stale ETag
    assert reg.store.add_record(1, {"to": "v0001"})
    assert not reg.store.add_record(1, {"to": "v0002"})  # record 1 is written once


def test_s3_model_files_are_cached_by_version_and_verified_before_loading(
        s3_bucket: str, tmp_path: Path, model, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri = f"s3://{s3_bucket}/reg"
    entry = Registry(uri).register(model, _meta(0.5))
    sha = entry.metadata["files"]["model.keras"]
    cached = Registry(uri).get(entry.version).model_path
    assert cached.is_relative_to(tmp_path / "cache") and sha[:16] in cached.parent.name
    assert load_model(Registry(uri).get(entry.version)) is not None
    cached.write_bytes(b"torn")                          # a damaged cache is fetched again
    assert Registry(uri).get(entry.version).model_sha256() == sha
    load_model(Registry(uri).get(entry.version))
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="reg/versions/v0001/model.keras",
                                  Body=b"tampered")      # the object no longer matches
    cached.unlink()
    with pytest.raises(RegistryError, match="SHA-256 does not match"):
        load_model(Registry(uri).get(entry.version))
