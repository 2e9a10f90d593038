"""The retraining flow learning beyond its labeled folder, on a real Prefect API: our
synthetic frames as a source domain for a small folder (pretrained once, then from the cache),
the labels fed back (a training share and a held-out share that judges the model and is never
trained on), and adaptation to the unlabeled stream. Toy sizes: the numbers are the bench's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import tasks.adapt.gather as gather
from flows.retrain import retrain_flow
from models.registry import Registry
from tasks.synth.generate import generate_dataset, synth_dataset
from tests.support.adapt_support import commit_files, record_labels
from tests.support.classify_support import npy_bytes, write

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labeled folder, and a classified output whose frames were all labeled back:
    4 batches of one-frame files, drawn from people the folder never saw."""
    out = tmp_path_factory.mktemp("sources_root")
    generate_dataset(out, per_class=4, seed=31)
    stream = synth_dataset(per_class=2, seed=32)
    rels, rows = [], []
    for i, (frame, label) in enumerate(zip(stream.frames, stream.labels, strict=True)):
        rel = f"batch_{i % 4}/f{i:03d}.npy"
        write(out / "incoming" / rel, npy_bytes(frame[None]))
        rels.append(rel)
        rows.append((rel, 0, label))
    commit_files(out / "incoming", out / "output", rels, datetime.now(UTC), "c-1")
    assert record_labels(out / "output", rows) == len(rows)
    return out


@pytest.fixture
def transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transfer on, at a toy synthetic size; adaptation from a few dozen frames."""
    monkeypatch.setenv("POSEBATCH_TRANSFER_BELOW", "100")
    monkeypatch.setenv("POSEBATCH_SYNTHETIC_PER_CLASS", "3")
    monkeypatch.setattr(gather, "MIN_UNLABELED", 10)


def test_small_folder_transfers_learns_feedback_and_adapts(prefect_server, root: Path,
                                                           transfer: None) -> None:
    out = retrain_flow(data_root=str(root), epochs=1, seed=0)
    src = out["sources"]
    assert src["source"] == "synthetic" and "fewer than 100" in src["why"]
    assert src["synthetic_frames"] == 17 * 3 and src["user_frames"] == 17 * 4
    assert src["transfer"]["strategy"] == "mixed"  # the default
    assert src["transfer"]["train_files"] > 17  # synthetic and the user's files together
    versus = src["transfer"]["versus_synthetic_only"]  # the synthetic-only model, judged too
    assert src["transfer"]["pretrain"]["cached"] is False
    assert set(versus["val_macro_f1"]) == {"trained", "synthetic only"}
    assert versus["kept"] == max(versus["val_macro_f1"], key=lambda k: (
        versus["val_macro_f1"][k], k == "trained"))
    fb = src["feedback"]
    assert fb["train_frames"] > 0 and fb["heldout_frames"] > 0
    assert fb["train_frames"] + fb["heldout_frames"] == 34 == src["feedback_train_frames"] \
        + fb["heldout_frames"]
    # the held-out share is whole batches, and none of its frames was trained on
    held = set(fb["holdout_keys"])
    assert held and held < {f"batch_{i}" for i in range(4)}
    trained = {p.name for p in (root / "cache" / "feedback").rglob("*.npy")}
    stream_names = {f"f{i:03d}" for i in range(34) if f"batch_{i % 4}" in held}
    assert trained and not any(p.split("_f")[0] in stream_names for p in trained)
    assert all(p.parent.name not in held for p in (root / "cache" / "feedback").rglob("*.npy"))
    # the held-out frames judge the model, beside the folder's own test split
    assert set(out["target_metrics"]) == {"challenger"}  # no production to compare yet
    ad = src["adaptation"]
    assert ad["used"] and ad["kept"] in ("none", "adabn", "self-training x1",
                                         "self-training x2")
    assert ad["target_labels"] and "labeled target validation" in ad["judged_on"]
    assert out["promoted"]  # judged on target labels: the first model goes in

    entry = Registry(root / "registry").resolve()
    meta = entry.metadata
    assert meta["training_sources"]["synthetic_settings"]["per_class"] == 3
    assert meta["target_metrics"]["challenger"]["macro_f1"] is not None
    settings = json.loads(next((root / "cache" / "synthetic").glob("*/settings.json"))
                          .read_text())
    assert settings["per_class"] == 3 and settings["nuisance"] == "defaults"
    report = (entry.path / "report.md").read_text()
    assert "## Sources and adaptation" in report and "Held-out feedback frames" in report


def test_finetune_reuses_the_pretrained_model_and_the_holdout_stays(prefect_server,
                                                                    root: Path,
                                                                    transfer: None) -> None:
    reg = Registry(root / "registry")
    if reg.production_version() is None:  # run alone: the first model first
        retrain_flow(data_root=str(root), epochs=1, seed=0)
    first = reg.resolve().metadata["training_sources"]["feedback"]["holdout_keys"]
    runs = [retrain_flow(data_root=str(root), epochs=1, seed=0, unlabeled="none",
                         strategy="finetune") for _ in range(2)]
    # the mixed run before pretrained it (for its synthetic-only candidate): both from cache
    assert [r["sources"]["transfer"]["pretrain"]["cached"] for r in runs] == [True, True]
    assert all(r["sources"]["transfer"]["finetuned"] for r in runs)
    out = runs[1]
    assert out["sources"]["feedback"]["holdout_keys"] == first
    assert out["sources"]["adaptation"] == {"used": False, "why": "--unlabeled none",
                                            "kept": "none"}
    assert set(out["target_metrics"]) == {"challenger", "production"}
    assert "held-out feedback frame(s)" in out["reason"]


def test_adapted_without_target_labels_needs_promote_always(prefect_server, tmp_path: Path,
                                                           root: Path, transfer: None,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """No labeled folder and no feedback: synthetic frames only, adapted to a folder of
    unlabeled frames. Nothing judges it on the target domain: registered, not promoted.
    (A one-epoch toy model's adapted candidates may look collapsed to the label-free guard;
    the guard is off here so the gate's rule is what is tested.)"""
    import tasks.adapt.domain as domain

    monkeypatch.setattr(domain, "COLLAPSE_RATIO", 0.0)
    stream = tmp_path / "stream"
    stream.mkdir()
    for i, frame in enumerate(synth_dataset(per_class=1, seed=40).frames):
        np.save(stream / f"s{i}.npy", frame[None])
    out = retrain_flow(data_root=str(tmp_path), labeled_dir=str(tmp_path / "none"), epochs=1,
                       seed=0, unlabeled=str(stream), feedback=False, source="synthetic")
    assert out["sources"]["source"] == "synthetic" and out["sources"]["user_frames"] == 0
    ad = out["sources"]["adaptation"]
    assert ad["kept"] != "none" and not ad["target_labels"]
    assert not out["promoted"] and "--promote always" in out["reason"]

