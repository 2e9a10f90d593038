"""The audit finds labels planted wrong in a generated labeled folder, out of sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.label.audit import audit_labels, write_report
from tasks.train.dataset import scan_labeled


@pytest.fixture(scope="module")
def scan(small_data: Path):
    return scan_labeled(small_data / "labeled")


def test_planted_flips_are_found_and_reported(scan, small_data: Path, tmp_path: Path):
    labels = scan.labels().copy()
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(labels), 10, replace=False)           # 5 % of 204 files
    labels[flipped] = (labels[flipped] + rng.integers(1, 17, size=10)) % 17
    audit = audit_labels([f.features for f in scan.files], labels, scan.class_names)
    flagged = {s["index"] for s in audit.suspects}
    hits = flagged & set(flipped.tolist())
    assert len(hits) >= 7                                           # recall >= 0.7
    assert len(hits) / len(flagged) >= 0.25                         # 5x the base rate
    assert audit.method in audit.oof_log_loss and set(audit.oof_log_loss) == {
        "logreg", "hgb", "ensemble"}
    first = audit.suspects[0]
    assert first["given"] == scan.class_names[labels[first["index"]]]
    assert first["suggested"] != first["given"]
    summary = audit.summary([f.file.rel for f in scan.files])
    files = write_report(tmp_path, summary, small_data / "labeled")
    lines = Path(files["csv"]).read_text().splitlines()
    assert lines[0] == "path,given,suggested,label_quality,image"
    assert len(lines) == len(flagged) + 1
    assert len(list((tmp_path / "images").glob("*.png"))) == len(flagged)


def test_a_class_too_small_to_check_is_named_not_guessed(scan):
    labels = scan.labels().copy()
    lone = np.flatnonzero(labels == 3)
    labels[lone[1:]] = 4                                            # class 3: one file left
    audit = audit_labels([f.features for f in scan.files], labels, scan.class_names,
                         method="logreg")
    assert audit.skipped_classes == [scan.class_names[3]]
    assert audit.files == len(labels) - 1
    assert all(s["index"] != lone[0] for s in audit.suspects)

