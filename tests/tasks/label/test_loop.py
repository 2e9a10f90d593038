"""The labeling loop on a real classified output: suggest never offers a labeled frame nor
one twice and writes the three artifacts; labels come back from the CSV and from Label
Studio's exports alike, once; a frame whose content is not what was classified is refused;
the labeled-folder mirror follows the store."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from models.spec import class_names
from tasks.label.intake import import_labels, materialise_feedback
from tasks.label.pool import COLUMNS, labeled_keys
from tasks.label.sheet import read_labels
from tasks.label.suggest import suggest
from tests.support.adapt_support import commit_files, record_labels, write_inputs

NAMES = class_names()
AT = datetime(2026, 11, 30, 12, tzinfo=UTC)
FILES = {"b1/a.npy": 4, "b1/b.npy": 3, "b2/c.npy": 4, "b2/d.npy": 2, "b3/e.npy": 5}


def predictions(out: Path):
    return ds.dataset(out / "predictions", partitioning="hive").to_table()


@pytest.fixture()
def output(tmp_path: Path) -> tuple[Path, Path]:
    """18 frames classified in three batches; two of them labeled already."""
    inp, out = tmp_path / "in", tmp_path / "out"
    write_inputs(inp, FILES)
    commit_files(inp, out, sorted(FILES), AT, "c1")
    assert record_labels(out, [("b1/a.npy", 0, NAMES[0]), ("b3/e.npy", 4, NAMES[1])]) == 2
    return inp, out


def run_suggest(inp: Path, out: Path, folder: Path, n: int = 8, strategy: str = "auto"):
    return suggest(predictions(out).select(COLUMNS), str(out), str(inp), folder, n=n,
                   strategy=strategy, class_names=NAMES, image_url_prefix="/files/")


def fill(csv_path: Path, label_of) -> list[dict]:
    rows = list(csv.DictReader(csv_path.open()))
    for r in rows:
        r["label"] = label_of(r)
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


@pytest.mark.parametrize("strategy", ["auto", "margin", "random"])
def test_suggest_skips_labeled_frames_never_repeats_and_writes_the_three_artifacts(
        output, tmp_path: Path, strategy: str):
    inp, out = output
    res = run_suggest(inp, out, tmp_path / "sheet", n=8, strategy=strategy)
    keys = [(p["source_path"], p["frame_index"], p["content_sha256"]) for p in res["picks"]]
    assert len(keys) == 8 and len(set(keys)) == 8
    assert not set(keys) & labeled_keys(str(out))
    assert (res["eligible_frames"], res["already_labeled"], res["pool_frames"]) == (18, 2, 16)
    assert res["used"] == ("typical" if strategy == "auto" else strategy)
    rows = list(csv.DictReader(open(res["csv"])))
    assert list(rows[0]) == ["source_path", "frame_index", "content_sha256", "predicted",
                             "label", "image"]
    assert [(r["source_path"], int(r["frame_index"]), r["content_sha256"])
            for r in rows] == keys and all(r["label"] == "" for r in rows)
    for r in rows:
        assert (tmp_path / "sheet" / r["image"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tasks = json.loads(Path(res["label_studio_tasks"]).read_text())
    assert [t["data"]["image"] for t in tasks] == ["/files/" + r["image"] for r in rows]
    pred = tasks[0]["predictions"][0]
    assert pred["result"][0]["value"]["choices"] == [rows[0]["predicted"]]
    assert 0 < pred["score"] <= 1
    config = Path(res["label_studio_config"]).read_text()
    assert config.count("<Choice ") == len(NAMES) and 'toName="image"' in config


def test_labels_import_from_the_csv_and_label_studio_alike_and_only_once(output, tmp_path):
    inp, out = output
    res = run_suggest(inp, out, tmp_path / "sheet", n=6)
    truth = {(p["source_path"], p["frame_index"]): NAMES[k % 5 + 2]
             for k, p in enumerate(res["picks"])}
    fill(Path(res["csv"]), lambda r: truth[(r["source_path"], int(r["frame_index"]))])
    tasks = json.loads(Path(res["label_studio_tasks"]).read_text())
    full = [{**t, "id": i, "annotations": [
        {"was_cancelled": False, "result": [{"from_name": "pose", "to_name": "image",
         "type": "choices", "value": {"choices": [
             truth[(t["data"]["source_path"], t["data"]["frame_index"])]]}}]}]}
        for i, t in enumerate(tasks)]
    minimal = [{**t["data"], "pose": truth[(t["data"]["source_path"],
                                           t["data"]["frame_index"])]} for t in tasks]
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "min.json").write_text(json.dumps(minimal))
    from_csv = read_labels(Path(res["csv"])).sort_by("source_path")
    for export in ("full.json", "min.json"):
        assert read_labels(tmp_path / export).sort_by("source_path").equals(from_csv)
    first = import_labels(from_csv, predictions(out), NAMES, str(out))
    assert (first["matched_frames"], first["recorded"]) == (6, True)
    again = import_labels(read_labels(tmp_path / "full.json"), predictions(out), NAMES,
                          str(out))
    assert (again["matched_frames"], again["recorded"]) == (6, False)
    assert len(labeled_keys(str(out))) == 8
    assert run_suggest(inp, out, tmp_path / "next", n=20)["pool_frames"] == 10


def test_unknown_classes_unmatched_frames_and_changed_content_are_counted_and_named(
        output, tmp_path: Path):
    inp, out = output
    res = run_suggest(inp, out, tmp_path / "sheet", n=5)
    rows = fill(Path(res["csv"]), lambda r: NAMES[3])
    other_in, other_out = tmp_path / "in2", tmp_path / "out2"  # same names, other frames
    write_inputs(other_in, FILES, seed=50)
    commit_files(other_in, other_out, sorted(FILES), AT, "c1")
    got = import_labels(read_labels(Path(res["csv"])), predictions(other_out), NAMES,
                        str(other_out))
    assert (got["matched_frames"], got["changed_rows"]) == (0, 5)
    assert got["changed"] == sorted({r["source_path"] for r in rows})
    text = Path(res["csv"]).read_text().splitlines()
    text[1] = text[1].rsplit(",", 2)[0] + ",flying,x.png"           # not a class
    text[2] = "nowhere.npy," + text[2].split(",", 1)[1]               # never classified
    Path(res["csv"]).write_text("\n".join(text) + "\n")
    got = import_labels(read_labels(Path(res["csv"])), predictions(out), NAMES, str(out))
    assert (got["matched_frames"], got["unknown_class_rows"], got["unmatched_rows"],
            got["changed_rows"]) == (3, 1, 1, 0)
    assert got["unmatched"] == ["nowhere.npy"] and got["unknown_class"][0]["true_label"] == \
        "flying"


def test_the_folder_mirror_follows_the_store(output, tmp_path: Path):
    inp, out = output
    labeled = tmp_path / "labeled"
    first = materialise_feedback(str(out), str(inp), labeled, NAMES)
    files = sorted(p.relative_to(labeled).as_posix() for p in labeled.rglob("*.npy"))
    assert first["written"] == 2 and len(files) == 2
    assert files[0].startswith(f"{NAMES[0]}/feedback/b1/") and \
        files[1].startswith(f"{NAMES[1]}/feedback/b3/")
    saved = np.load(labeled / files[0], allow_pickle=False)
    assert saved.shape == (1, 17, 64, 48) and saved.dtype == np.float32
    record_labels(out, [("b1/a.npy", 0, NAMES[5])])                # relabeled
    second = materialise_feedback(str(out), str(inp), labeled, NAMES)
    assert (second["written"], second["removed"]) == (1, 1)
    moved = sorted(p.relative_to(labeled).as_posix() for p in labeled.rglob("*.npy"))
    assert moved[1].startswith(f"{NAMES[5]}/feedback/b1/") and len(moved) == 2


def test_retrain_with_feedback_skips_the_mirror_and_keeps_the_rest(output, tmp_path: Path,
                                                                   small_data: Path):
    import shutil

    from tasks.label.intake import without_mirror
    from tasks.train.dataset import scan_labeled

    inp, out = output
    labeled = tmp_path / "labeled"
    for cls in NAMES[:2]:
        shutil.copytree(small_data / "labeled" / cls, labeled / cls)
    own = len(scan_labeled(labeled).files)
    materialise_feedback(str(out), str(inp), labeled, NAMES)
    scan = scan_labeled(labeled)
    assert len(scan.files) == own + 2
    kept, skipped = without_mirror(scan)
    assert skipped == 2 and len(kept.files) == own
    assert not any("/feedback/" in f.file.rel for f in kept.files)
