"""``retrain --exclude-suspect``: files moved into the wrong class folder are flagged by the
label audit, left out of training, and named in the metadata and the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows.retrain import retrain_flow
from models.registry import Registry
from tasks.synth.generate import generate_dataset
from tasks.train.dataset import scan_labeled

pytestmark = pytest.mark.slow


def test_exclude_suspect_leaves_the_flagged_files_out_and_says_which(prefect_server,
                                                                     tmp_path: Path):
    generate_dataset(tmp_path, per_class=6, seed=4, incoming_batches=0,
                     incoming_per_batch=0)
    labeled = tmp_path / "labeled"
    classes = sorted(p.name for p in labeled.iterdir())
    moved = []
    for k, cls in enumerate(classes[:6]):                   # 6 of ~100 files mislabeled
        src = sorted((labeled / cls).rglob("*.npy"))[0]
        wrong = classes[(k + 5) % len(classes)]
        dst = labeled / wrong / src.relative_to(labeled / cls)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, dst)
        moved.append(dst.relative_to(labeled).as_posix())
    accepted = len(scan_labeled(labeled).files)
    out = retrain_flow(data_root=str(tmp_path), epochs=1, seed=0, exclude_suspect=True,
                       unlabeled="none", feedback=False)
    meta = Registry(tmp_path / "registry").get(out["version"]).metadata
    audit = meta["label_audit"]
    assert audit["ran"] and audit["excluded"] == sorted(s["path"] for s in audit["suspects"])
    caught = set(audit["excluded"]) & set(moved)
    assert len(caught) >= 4, (audit["excluded"], moved)
    assert meta["data"]["files"] == accepted - len(audit["excluded"])
    report = (Registry(tmp_path / "registry").get(out["version"]).path / "report.md").read_text()
    assert "## Label audit" in report and f"**{len(audit['excluded'])} left out**" in report
    assert all(path in report for path in sorted(caught)[:3])
