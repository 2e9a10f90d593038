"""Label feedback: parsing, the join with predictions, idempotent recording, realized
accuracy and macro-F1 against plain Python (and scikit-learn)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest
from sklearn.metrics import f1_score

from models.spec import class_names
from tasks.monitor.feedback import (
    FeedbackError,
    match_labels,
    parse_labels,
    read_feedback,
    realized,
    realized_by_run,
    record_feedback,
    with_realized,
)
from tasks.synth.sample_outputs import synth_predictions


def labels_csv(preds, rows, wrong_every: int = 3, frame: bool = True) -> str:
    """A labels CSV for the given prediction rows: every ``wrong_every``-th label differs from
    the prediction (the next class), so the realized accuracy is known."""
    names = class_names()
    out = ["source_path,frame_index,label" if frame else "source_path,label"]
    for k, i in enumerate(rows):
        label = preds["label"][i].as_py()
        if wrong_every and k % wrong_every == 0:
            label = names[(names.index(label) + 1) % len(names)]
        where = f"{preds['source_path'][i].as_py()}"
        out.append(f"{where},{preds['frame_index'][i].as_py()},{label}" if frame
                   else f"{where},{label}")
    return "\n".join(out) + "\n"


def test_parse_labels_with_and_without_frame_index():
    t = parse_labels("source_path,label\nb/a.npy,standing\n")
    assert t.to_pylist() == [{"source_path": "b/a.npy", "frame_index": None,
                              "true_label": "standing"}]
    t = parse_labels("source_path,frame_index,label\nb\\a.npy,2,sitting\n")
    assert t.to_pylist()[0] == {"source_path": "b/a.npy", "frame_index": 2,
                                "true_label": "sitting"}
    with pytest.raises(FeedbackError, match="header"):
        parse_labels("path,cls\nx,y\n")
    with pytest.raises(FeedbackError, match="line 2"):
        parse_labels("source_path,frame_index,label\nx,one,y\n")


def test_match_counts_rejected_and_unmatched_and_realized_matches_sklearn():
    preds = synth_predictions(200, date(2024, 6, 1), 2, seed=3)
    text = labels_csv(preds, range(0, 120))
    text += f"nowhere/x.npy,0,{class_names()[0]}\nbatch_000/y.npy,0,flying\n"
    res = match_labels(parse_labels(text), preds, class_names())
    fb = res["matched"]
    assert fb.num_rows == 120 and res["unmatched_rows"] == 1 and res["rejected_rows"] == 1
    assert res["first_unmatched"] == "nowhere/x.npy"
    assert res["rejected"] == [{"source_path": "batch_000/y.npy", "true_label": "flying"}]
    got = realized(fb["true_label"].to_pylist(), fb["label"].to_pylist())
    assert got["accuracy"] == pytest.approx(80 / 120)      # every third is wrong
    assert got["macro_f1"] == pytest.approx(f1_score(fb["true_label"].to_pylist(),
                                                     fb["label"].to_pylist(), average="macro"))
    by_run = realized_by_run(fb)
    assert sum(r["labeled_frames"] for r in by_run.values()) == 120
    assert set(by_run) <= set(preds["flow_run_id"].to_pylist())


def test_no_frame_index_labels_every_frame_of_the_file():
    preds = synth_predictions(30, date(2024, 6, 1), 1, seed=4)
    path = preds["source_path"][0].as_py()
    res = match_labels(parse_labels(f"source_path,label\n{path},{class_names()[1]}\n"), preds,
                       class_names())
    assert res["matched"]["source_path"].to_pylist() == [path]
    assert res["unmatched_rows"] == 0


def test_recording_is_idempotent_and_the_latest_label_wins(tmp_path):
    out = str(tmp_path / "output")
    preds = synth_predictions(100, date(2024, 6, 1), 1, seed=5)
    first = match_labels(parse_labels(labels_csv(preds, range(50))), preds, class_names(),
                         recorded_at=datetime(2024, 6, 2, tzinfo=UTC))["matched"]
    path, new = record_feedback(out, first)
    assert new and record_feedback(out, first.take(np.arange(49, -1, -1))) == (path, False)
    assert read_feedback(out).num_rows == 50
    # the same 10 frames again, now labeled as predicted (corrections), and 10 new ones
    again = match_labels(parse_labels(labels_csv(preds, range(40, 60), wrong_every=0)),
                         preds, class_names(),
                         recorded_at=datetime(2024, 6, 3, tzinfo=UTC))["matched"]
    assert record_feedback(out, again)[1]
    fb = read_feedback(out)
    assert fb.num_rows == 60
    rows = {r["source_path"]: r for r in fb.to_pylist()}
    assert all(rows[preds["source_path"][i].as_py()]["true_label"] == preds["label"][i].as_py()
               for i in range(40, 60))


def test_with_realized_adds_columns_to_the_runs(tmp_path):
    import pyarrow as pa

    preds = synth_predictions(80, date(2024, 6, 1), 1, seed=6, batches=2)
    fb = match_labels(parse_labels(labels_csv(preds, range(0, 80, 2), wrong_every=2)),
                      preds, class_names())["matched"]
    runs = pa.table({"flow_run_id": ["run-0", "run-1", "run-9"]})
    got = with_realized(runs, fb).to_pylist()
    assert got[2] == {"flow_run_id": "run-9", "labeled_frames": None, "accuracy": None,
                      "macro_f1": None}
    assert got[0]["labeled_frames"] + got[1]["labeled_frames"] == 40
    assert 0.3 < got[0]["accuracy"] < 0.7


def test_only_unknown_labels_match_nothing():
    preds = synth_predictions(10, date(2024, 6, 1), 1, seed=7)
    res = match_labels(parse_labels("source_path,label\na.npy,flying\n"), preds, class_names())
    assert res["matched"].num_rows == 0 and res["rejected_rows"] == 1
    assert res["unmatched_rows"] == 0
