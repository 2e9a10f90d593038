"""The classification flow on a real Prefect API: output, rejections, re-runs, readiness."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from models.spec import class_names
from tasks.classify.ledger import Ledger, LockHeld, OutputLock
from tasks.io.schema import PREDICTIONS_SCHEMA
from tasks.io.validate import REASONS
from tests.support.classify_support import (
    bad_files,
    good_frames,
    make_input,
    npy_bytes,
    training_counts,
    write,
)


def run(inp: Path, out: Path, registry: Path, **kw):
    from flows.classify import classify_flow

    kw.setdefault("batch_size", 4)
    kw.setdefault("quiet_seconds", 0)
    return classify_flow(input_dir=str(inp), output_dir=str(out), registry_dir=str(registry),
                         **kw)


def predictions(out: Path):
    return ds.dataset(out / "predictions", partitioning="hive").to_table()


def rejections(out: Path):
    return ds.dataset(out / "rejections", partitioning="hive").to_table()


def frame_keys(table) -> list[tuple[str, int, str]]:
    return sorted(zip(table.column("source_path").to_pylist(),
                      table.column("frame_index").to_pylist(),
                      table.column("content_sha256").to_pylist(), strict=True))


def test_flow_classifies_every_valid_frame_and_records_every_rejection(
        prefect_server, registry_dir: Path, tmp_path: Path):
    inp = make_input(tmp_path / "data", batches=2, per_batch=6)
    for reason, data in bad_files().items():
        write(inp / "batch_bad" / f"{reason}.npy", data)
    write(inp / "batch_bad" / "three_frames.npy", npy_bytes(good_frames(3)))
    write(inp / "batch_bad" / "_SUCCESS", b"")
    out = tmp_path / "out"
    summary = run(inp, out, registry_dir, chunk_files=5)

    preds = predictions(out)
    expected = sorted([(p.relative_to(inp).as_posix(), 0) for p in inp.glob("batch_00*/*.npy")]
                      + [("batch_bad/three_frames.npy", k) for k in range(3)])
    got = sorted(zip(preds.column("source_path").to_pylist(),
                     preds.column("frame_index").to_pylist(), strict=True))
    assert got == expected                                   # each valid frame, once
    file_schema = ds.dataset(out / "predictions", partitioning=None).schema
    assert file_schema.remove_metadata() == PREDICTIONS_SCHEMA.remove_metadata()
    assert file_schema.metadata[b"posebatch.model_version"] == b"v0001"
    assert set(preds.column("label").to_pylist()) <= set(class_names())
    assert set(preds.column("flow_run_id").to_pylist()) == {summary["flow_run_id"]}
    rej = rejections(out)
    assert sorted(zip(rej.column("source_path").to_pylist(), rej.column("reason").to_pylist(),
                      strict=True)) == sorted((f"batch_bad/{r}.npy", r)
                                              for r in REASONS if r != "read_error")
    assert all(rej.column("detail").to_pylist())

    assert summary["classified"] == 13 and summary["frames"] == 15
    assert summary["rejected"] == 7
    assert summary["rejected_by_reason"] == {r: 1 for r in REASONS if r != "read_error"}
    assert sum(summary["labels"].values()) == 15
    assert summary["files_seen"] == 20 and summary["new"] == 20
    assert summary["parts_written"] >= 5                       # 4 chunks, some with rejections

    from prefect.artifacts import Artifact

    artifact = Artifact.get("classify-summary")
    assert artifact is not None and "files classified" in str(artifact.data)
    check_markdown_artifact(summary["flow_run_id"], preds)


def check_markdown_artifact(flow_run_id: str, preds) -> None:
    """The run's markdown artifact, read back from the Prefect API, against the Parquet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["classify-report"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(found) == 1 and found[0].type == "markdown"
    md = str(found[0].data)
    lines = md.splitlines()
    assert "Model **v0001**" in md
    assert f"**{preds.num_rows}** frames classified, **7** files rejected" in md
    # By label: frames, share and mean confidence, computed here in plain Python.
    conf: dict[str, list[float]] = {}
    for label, c in zip(preds.column("label").to_pylist(),
                        preds.column("confidence").to_pylist(), strict=True):
        conf.setdefault(label, []).append(c)
    for label, cs in conf.items():
        row = (f"| {label} | {len(cs)} | {len(cs) / preds.num_rows:.1%} | "
               f"{sum(cs) / len(cs):.3f} | {sum(c < 0.5 for c in cs) / len(cs):.1%} |")
        assert row in lines, (row, md)
    # Drift against the model's recorded training mix: the population stability index.
    train = training_counts()
    psi = 0.0
    for name in set(train) | set(conf):
        a = max(len(conf.get(name, [])) / preds.num_rows, 1e-4)
        b = max(train.get(name, 0) / sum(train.values()), 1e-4)
        psi += (a - b) * math.log(a / b)
    assert f"PSI **{psi:.3f}**" in md
    for reason in REASONS:
        assert (f"| {reason} | 1 |" in lines) == (reason != "read_error")


def test_reruns_are_idempotent_and_only_changed_content_is_reprocessed(
        prefect_server, registry_dir: Path, tmp_path: Path):
    inp = make_input(tmp_path / "data", batches=2, per_batch=5)
    out = tmp_path / "out"
    first = run(inp, out, registry_dir)
    assert first["classified"] == 10
    keys = frame_keys(predictions(out))

    again = run(inp, out, registry_dir)
    assert (again["new"], again["already_processed"], again["classified"]) == (0, 10, 0)
    assert frame_keys(predictions(out)) == keys

    files = sorted(inp.glob("batch_000/*.npy"))
    rewritten, touched, renamed = files[0], files[1], files[2]
    write(rewritten, npy_bytes(good_frames(1, seed=99)))       # new content, same path
    later = time.time() + 3
    os.utime(touched, (later, later))                          # same content, new time
    renamed.rename(renamed.with_name("renamed.npy"))           # same content, new path
    shutil.copy(files[3], inp / "batch_001" / "copy.npy")      # same content, second path
    third = run(inp, out, registry_dir)
    assert (third["classified"], third["unchanged"], third["duplicates"]) == (1, 1, 2)
    new_keys = frame_keys(predictions(out))
    added = sorted(set(new_keys) - set(keys))
    assert [k[0] for k in added] == [rewritten.relative_to(inp).as_posix()]
    assert len(new_keys) == len(keys) + 1                       # nothing else twice
    assert run(inp, out, registry_dir)["new"] == 0              # and all of it is now known
    statuses = Ledger.load(str(out)).entries.column("status").to_pylist()
    assert statuses.count("duplicate") == 2 and statuses.count("unchanged") == 1


def test_an_incomplete_batch_waits_until_marked_or_quiet(prefect_server, registry_dir: Path,
                                                         tmp_path: Path):
    inp = tmp_path / "incoming"
    for i in range(3):
        write(inp / "b" / f"{i}.npy", npy_bytes(good_frames(1, seed=i)))
    out = tmp_path / "out"
    waiting = run(inp, out, registry_dir, quiet_seconds=600)
    assert (waiting["not_ready"], waiting["new"], waiting["batches_waiting"]) == (3, 0, ["b"])
    assert not (out / "predictions").exists()
    write(inp / "b" / "_SUCCESS", b"")
    done = run(inp, out, registry_dir, quiet_seconds=600)
    assert (done["not_ready"], done["classified"]) == (0, 3)


def test_max_files_bounds_a_run_and_move_processed_empties_the_input(
        prefect_server, registry_dir: Path, tmp_path: Path):
    inp = make_input(tmp_path / "data", batches=1, per_batch=6)
    write(inp / "batch_000" / "zz_bad.npy", bad_files()["bad_shape"])  # sorts last
    done = tmp_path / "done"
    out = tmp_path / "out"
    first = run(inp, out, registry_dir, max_files=4, move_processed=str(done))
    assert (first["classified"], first["deferred"], first["moved"]) == (4, 3, 4)
    assert len(list(inp.glob("batch_000/*.npy"))) == 3
    second = run(inp, out, registry_dir, move_processed=str(done))
    assert (second["classified"], second["rejected"], second["moved"]) == (2, 1, 3)
    assert list(inp.glob("batch_000/*.npy")) == []
    assert (done / "_rejected" / "batch_000" / "zz_bad.npy").is_file()
    assert len(list(done.glob("batch_000/*.npy"))) == 6
    assert predictions(out).num_rows == 6


def test_move_processed_later_sends_rejected_content_and_its_copies_to_rejected(
        prefect_server, registry_dir: Path, tmp_path: Path):
    inp = make_input(tmp_path / "data", batches=1, per_batch=2)
    bad = bad_files()["bad_shape"]
    write(inp / "batch_000" / "zz_bad.npy", bad)
    done, out = tmp_path / "done", tmp_path / "out"
    first = run(inp, out, registry_dir)  # processed, input left alone
    assert (first["classified"], first["rejected"]) == (2, 1)
    write(inp / "batch_001" / "copy_of_bad.npy", bad)  # a known rejected content, new path
    (inp / "batch_001" / "_SUCCESS").write_bytes(b"")
    second = run(inp, out, registry_dir, move_processed=str(done))
    assert second["duplicates"] == 1 and second["moved"] == 4
    assert sorted(p.relative_to(done).as_posix() for p in done.rglob("*.npy")) == sorted(
        [f"batch_000/{p.name}" for p in (done / "batch_000").glob("*.npy")]
        + ["_rejected/batch_000/zz_bad.npy", "_rejected/batch_001/copy_of_bad.npy"])
    assert len(list((done / "batch_000").glob("*.npy"))) == 2
    assert list(inp.rglob("*.npy")) == []


def test_a_held_lock_stops_a_second_run_on_the_same_output(prefect_server, registry_dir: Path,
                                                           tmp_path: Path):
    inp = make_input(tmp_path / "data", batches=1, per_batch=2)
    out = tmp_path / "out"
    with OutputLock(str(out)):
        with pytest.raises(LockHeld, match="another posebatch run is writing to"):
            run(inp, out, registry_dir)
    assert run(inp, out, registry_dir)["classified"] == 2


def test_out_of_distribution_frames_get_a_warning_and_are_counted(
        prefect_server, registry_dir: Path, tmp_path: Path):
    """A frame no person produces (every joint at one spot) is classified like any other,
    with an ``ood_skeleton`` warning in its row; the run summary counts such frames."""
    inp = tmp_path / "in"
    frames = good_frames(3, seed=4)
    odd = frames[0].copy()
    odd[:] = odd[0]  # the nose channel in all 17: no torso, no limbs
    for i, f in enumerate(frames):
        write(inp / "b" / f"ok{i}.npy", npy_bytes(f[None]))
    write(inp / "b" / "odd.npy", npy_bytes(odd[None]))
    write(inp / "b" / "_SUCCESS", b"")
    summary = run(inp, tmp_path / "out", registry_dir)
    rows = predictions(tmp_path / "out").to_pylist()
    flagged = {r["source_path"] for r in rows if "ood_skeleton" in r["warnings"]}
    assert len(rows) == 4 and flagged == {"b/odd.npy"}
    assert summary["out_of_distribution"] == 1
    assert summary["warnings"]["ood_skeleton"] == 1
    from tasks.classify.run_summary import summary_table

    table = {r["metric"]: r["value"] for r in summary_table(summary)}
    assert table["frames flagged out of distribution"] == "1"


def test_a_run_that_could_not_read_due_files_fails_and_leaves_them(
        prefect_server, registry_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One file unreadable, one reported missing by the reader though it is there (a worker
    with another mount): the run commits the rest, then fails in one line; the next run
    takes exactly those two."""
    import tasks.classify.infer as infer
    from flows.classify import IncompleteRun

    inp = make_input(tmp_path / "data", batches=1, per_batch=6)
    out = tmp_path / "out"
    files = sorted(p.relative_to(inp).as_posix() for p in inp.rglob("*.npy"))
    real = infer.read_input

    def flaky(loc, rel, max_frames, slot=None):
        if rel == files[0]:
            return infer.FileOutcome(rel, skipped="unreadable", detail="Input/output error"), None
        if rel == files[1]:
            return infer.FileOutcome(rel, skipped="vanished", detail="no such file"), None
        return real(loc, rel, max_frames, slot)

    monkeypatch.setattr(infer, "read_input", flaky)
    with pytest.raises(IncompleteRun) as err:
        run(inp, out, registry_dir)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("2 file(s) due in ")
    assert "1 unreadable, 1 missing on the workers" in msg and files[0] in msg
    assert sorted(predictions(out).column("source_path").to_pylist()) == files[2:]
    monkeypatch.undo()
    summary = run(inp, out, registry_dir)
    assert summary["ok"] and summary["classified"] == 2 and summary["unreachable"] == 0
    assert sorted(predictions(out).column("source_path").to_pylist()) == files


def test_a_lost_output_part_is_classified_again_or_fails_the_run_naming_the_lost_files(
        prefect_server, registry_dir: Path, tmp_path: Path):
    """A committed part deleted by hand: the next run notices it, forgets its files and
    classifies them again (every frame once); a part whose files left the input fails the
    run in one line naming them, after classifying what it could."""
    from flows.classify import IncompleteRun

    inp = make_input(tmp_path / "data", batches=2, per_batch=4)
    out = tmp_path / "out"
    first = run(inp, out, registry_dir, chunk_files=2)
    assert first["ok"] and first["lost_parts"] == 0
    expected = frame_keys(predictions(out))
    parts = sorted((out / "predictions").rglob("*.parquet"))
    assert len(parts) == 4
    parts[0].unlink()
    summary = run(inp, out, registry_dir, chunk_files=2)
    assert summary["ok"], summary["problem"]
    assert (summary["lost_parts"], summary["restorable"], summary["unrestorable"]) == (1, 2, 0)
    assert summary["classified"] == 2
    assert frame_keys(predictions(out)) == expected                 # every frame once again
    # A damaged part whose files are gone from the input: the run says so and fails.
    damaged = sorted((out / "predictions").rglob("*.parquet"))[-1]
    lost_paths = set(ds.dataset(damaged).to_table()["source_path"].to_pylist())
    damaged.write_bytes(b"garbage")
    for rel in lost_paths:
        (inp / rel).unlink()
    with pytest.raises(IncompleteRun) as err:
        run(inp, out, registry_dir, chunk_files=2)
    msg = str(err.value)
    assert "\n" not in msg and "cannot be restored" in msg and min(lost_paths) in msg
    assert frame_keys(predictions(out)) == [k for k in expected if k[0] not in lost_paths]
    from tasks.classify.verify import verify

    assert verify(Ledger.load(str(out))).problems == []
    assert run(inp, out, registry_dir, chunk_files=2)["ok"]          # said once, not forever


def test_every_run_appends_one_monitoring_row_and_a_crossed_threshold_emits_an_event(
        prefect_server, registry_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A threshold no run can meet (estimated accuracy above 1): the run's row is written,
    readable by DuckDB, and the flow sends a ``posebatch.monitor.alert`` event with the
    metric, value and threshold; a second run (nothing new) appends its own row."""
    import duckdb
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from tasks.monitor.history import runs_glob

    monkeypatch.setenv("POSEBATCH_MONITOR_MIN_EST_ACCURACY", "1.01")
    inp = make_input(tmp_path / "data", batches=1, per_batch=6)
    out = tmp_path / "out"
    first = run(inp, out, registry_dir)
    mon = first["monitoring"]
    assert 0.0 < mon["est_accuracy"] <= 1.0
    assert mon["alerts"] == [f"est_accuracy {mon['est_accuracy']:.3f} < 1.01"]
    second = run(inp, out, registry_dir)
    rows = duckdb.sql(f"select flow_run_id, kind, frames, est_accuracy from read_parquet("
                      f"'{runs_glob(str(out))}', hive_partitioning=true) order by run_at"
                      ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (first["flow_run_id"], "classify", 6), (second["flow_run_id"], "classify", 0)]
    assert rows[0][3] == pytest.approx(mon["est_accuracy"])

    events = []
    with get_client(sync_client=True) as client:
        for _ in range(50):  # events reach the server asynchronously
            page = client.read_events(EventFilter(event=EventNameFilter(
                name=["posebatch.monitor.alert"])), limit=50)
            events = [e for e in page.events
                      if e.payload.get("flow_run_id") == first["flow_run_id"]]
            if events:
                break
            time.sleep(0.2)
    assert [(e.payload["metric"], e.payload["threshold"]) for e in events] == [
        ("est_accuracy", 1.01)]
    assert events[0].payload["value"] == pytest.approx(mon["est_accuracy"])


def test_a_byte_cap_takes_the_oldest_batch_first_and_reports_the_backlog(
        prefect_server, registry_dir: Path, tmp_path: Path):
    """After an outage: two nights of input, a run capped in bytes takes the older night
    and says what it left (files, bytes, the oldest waiting batch)."""
    inp = make_input(tmp_path / "data", batches=2, per_batch=3)
    old, new = time.time() - 48 * 3600, time.time() - 24 * 3600
    for batch, t in (("batch_001", old), ("batch_000", new)):   # the second batch is older
        for p in (inp / batch).iterdir():
            os.utime(p, (t, t))
    size = next((inp / "batch_001").glob("*.npy")).stat().st_size
    out = tmp_path / "out"
    first = run(inp, out, registry_dir, max_bytes=3 * size)
    assert first["classified"] == 3 and first["deferred"] == 3
    assert {Path(p).parent.name for p in predictions(out).column("source_path").to_pylist()} \
        == {"batch_001"}
    left = first["backlog"]
    assert (left["files"], left["bytes"], left["oldest_batch"]) == (3, 3 * size, "batch_000")
    assert 23.9 < left["oldest_age_hours"] < 24.5
    second = run(inp, out, registry_dir, max_bytes=3 * size)
    assert second["classified"] == 3 and second["backlog"]["files"] == 0
