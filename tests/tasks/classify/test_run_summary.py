"""A run's markdown summary: the slim frame tally and the model's training mix (no Prefect)."""

from __future__ import annotations

from collections import Counter
from datetime import date

from tasks.classify.run_summary import SUMMARY_INPUT, RunFrames, run_markdown, training_shares
from tasks.synth.sample_outputs import synth_predictions

RUN = {"output_dir": "out", "model_version": "v0007", "files_seen": 40, "new": 30,
       "classified": 25, "rejected": 3, "deferred": 2,
       "rejected_by_reason": {"truncated": 2, "non_finite": 1}}


def test_run_frames_keep_only_what_the_summary_needs_across_chunks():
    table = synth_predictions(500, date(2024, 6, 1), 2, seed=4)
    frames = RunFrames()
    for start in range(0, 500, 120):          # chunks with different label dictionaries
        frames.add(table.slice(start, 120))
    frames.add(None)
    kept = frames.table()
    assert kept.column_names == list(SUMMARY_INPUT)
    assert kept.column("label").to_pylist() == table.column("label").to_pylist()
    assert kept.column("confidence").to_pylist() == table.column("confidence").to_pylist()
    assert RunFrames().table().num_rows == 0


def test_markdown_counts_labels_and_reasons_and_names_the_drift_reference():
    table = synth_predictions(200, date(2024, 6, 1), 1, seed=2)
    frames = RunFrames()
    frames.add(table)
    counts = Counter(table.column("label").to_pylist())
    md = run_markdown(RUN, frames, {"class_distribution": {k: 1 for k in counts}})
    lines = md.splitlines()
    assert lines[0] == "# posebatch classify: out"
    assert "Model **v0007**; files: 40 seen, 30 new, 25 classified, 3 rejected" in md
    assert f"training mix ({len(counts)} labelled frames)" in md
    for label, n in counts.items():
        assert any(line.startswith(f"| {label} | {n} | ") for line in lines), label
    assert "| truncated | 2 |" in lines and "| non_finite | 1 |" in lines
    assert "PSI **" in md


def test_markdown_of_a_run_without_frames_or_training_mix():
    md = run_markdown({**RUN, "rejected_by_reason": {}}, RunFrames(), {"class_names": ["a"]})
    assert "**0** frames classified, **0** files rejected" in md
    assert "records no training class distribution: no drift figure" in md
    assert "PSI" not in md and "## By label" not in md
    assert training_shares({"class_distribution": {"a": 3, "b": 1}}) == {"a": 3.0, "b": 1.0}
