"""read_predictions / read_rejections: every filter against the same filter in plain Python,
partition pruning, and the one-line errors."""

from __future__ import annotations

import fnmatch
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from models.spec import class_names
from tasks.io.schema import PREDICTIONS, REJECTIONS
from tasks.read.query import (
    NoData,
    QueryError,
    glob_to_regex,
    list_parquet_files,
    parse_order_by,
    parse_when,
    read_predictions,
    read_rejections,
)
from tasks.synth.sample_outputs import (
    day_of,
    synth_predictions,
    synth_rejections,
    write_partitioned,
)

START = date(2024, 5, 1)
DAYS = 4


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[dict]]:
    """An output folder of 4 days (several files per day) and its rows as plain dicts."""
    out = tmp_path_factory.mktemp("query_out")
    pred = synth_predictions(3000, START, DAYS, seed=11, batches=5,
                             model_versions=("v0001", "v0002", "v0003"))
    rej = synth_rejections(120, START, DAYS, seed=12)
    write_partitioned(pred, out, PREDICTIONS, rows_per_file=300)
    write_partitioned(rej, out, REJECTIONS, rows_per_file=20)
    prows = pred.append_column("date", days(pred, "classified_at")).to_pylist()
    rrows = rej.append_column("date", days(rej, "rejected_at")).to_pylist()
    return out, prows, rrows


def days(table: pa.Table, column: str) -> pa.Array:
    """The partition value of each row (UTC day), in plain Python."""
    return pa.array([date.fromisoformat(d) for d in day_of(table, column)], pa.date32())


def keys(table: pa.Table | list[dict]) -> list[tuple[str, int]]:
    rows = table.to_pylist() if isinstance(table, pa.Table) else table
    return sorted((r["source_path"], r["frame_index"]) for r in rows)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_no_filter_reads_every_row_with_the_partition_date(outputs):
    out, rows, _ = outputs
    table = read_predictions(out)
    assert keys(table) == keys(rows)
    assert "date" in table.column_names
    by_key = {(r["source_path"], r["frame_index"]): r["date"] for r in rows}
    assert all(by_key[(r["source_path"], r["frame_index"])] == r["date"]
               for r in table.to_pylist())


@pytest.mark.parametrize("kwargs, keep", [
    ({"since": "2024-05-03"}, lambda r: r["classified_at"] >= utc(2024, 5, 3)),
    ({"since": date(2024, 5, 2)}, lambda r: r["classified_at"] >= utc(2024, 5, 2)),
    ({"since": "2024-05-02T13:30"}, lambda r: r["classified_at"] >= utc(2024, 5, 2, 13, 30)),
    ({"since": "2024-05-02T15:30+02:00"},
     lambda r: r["classified_at"] >= utc(2024, 5, 2, 13, 30)),
    ({"until": "2024-05-02"}, lambda r: r["classified_at"] < utc(2024, 5, 3)),
    ({"until": "2024-05-02T06:00:00"}, lambda r: r["classified_at"] <= utc(2024, 5, 2, 6)),
    ({"since": "2024-05-02", "until": "2024-05-02"}, lambda r: r["date"] == date(2024, 5, 2)),
    ({"labels": ["dummy"]}, lambda r: r["label"] == "dummy"),
    ({"labels": ["action_up", "select_avatar"]},
     lambda r: r["label"] in ("action_up", "select_avatar")),
    ({"min_confidence": 0.8}, lambda r: r["confidence"] >= 0.8),
    ({"max_confidence": 0.3}, lambda r: r["confidence"] <= 0.3),
    ({"min_confidence": 0.4, "max_confidence": 0.6}, lambda r: 0.4 <= r["confidence"] <= 0.6),
    ({"batches": ["batch_001", "batch_004"]},
     lambda r: r["batch"] in ("batch_001", "batch_004")),
    ({"model_versions": ["v0002"]}, lambda r: r["model_version"] == "v0002"),
    ({"path": "batch_002/*"}, lambda r: fnmatch.fnmatchcase(r["source_path"], "batch_002/*")),
    ({"path": "*/s1[0-4]/*"}, lambda r: fnmatch.fnmatchcase(r["source_path"], "*/s1[0-4]/*")),
    ({"path": "batch_00?/s0[!2-9]/t00*.npy"},
     lambda r: fnmatch.fnmatchcase(r["source_path"], "batch_00?/s0[!2-9]/t00*.npy")),
    ({"since": "2024-05-02", "labels": ["dummy", "category_sound"], "min_confidence": 0.5,
      "batches": ["batch_001", "batch_002", "batch_003"]},
     lambda r: r["date"] >= date(2024, 5, 2) and r["label"] in ("dummy", "category_sound")
     and r["confidence"] >= 0.5 and r["batch"] in ("batch_001", "batch_002", "batch_003")),
])
def test_filter_equals_plain_python(outputs, kwargs, keep):
    out, rows, _ = outputs
    expected = [r for r in rows if keep(r)]
    assert expected, "the filter must select something to be a meaningful check"
    assert len(expected) < len(rows)
    assert keys(read_predictions(out, **kwargs)) == keys(expected)


def test_columns_order_by_and_limit(outputs):
    out, rows, _ = outputs
    table = read_predictions(out, labels=["dummy"], columns=["source_path", "confidence"],
                             order_by="-confidence", limit=7)
    assert table.column_names == ["source_path", "confidence"]
    expected = sorted((r for r in rows if r["label"] == "dummy"),
                      key=lambda r: -r["confidence"])[:7]
    assert table.column("confidence").to_pylist() == [r["confidence"] for r in expected]
    two = read_predictions(out, columns="date,label", order_by=["label", "date:desc"])
    pairs = [(r["label"], r["date"]) for r in rows]
    want = sorted(sorted(pairs, key=lambda t: t[1], reverse=True), key=lambda t: t[0])
    assert list(zip(two.column("label").to_pylist(), two.column("date").to_pylist(),
                    strict=True)) == want
    head = read_predictions(out, limit=5)
    assert head.num_rows == 5
    assert read_predictions(out, limit=0).num_rows == 0


def test_rejections_filters(outputs):
    out, _, rrows = outputs
    got = read_rejections(out, since="2024-05-03", reasons=["truncated", "not_npy"])
    want = [r for r in rrows if r["rejected_at"] >= utc(2024, 5, 3)
            and r["reason"] in ("truncated", "not_npy")]
    assert want and sorted(got.column("source_path").to_pylist()) == \
        sorted(r["source_path"] for r in want)
    got = read_rejections(out, path="batch_001/*", columns=["source_path"])
    assert got.column_names == ["source_path"]
    assert sorted(got.column("source_path").to_pylist()) == sorted(
        r["source_path"] for r in rrows if r["source_path"].startswith("batch_001/"))


def test_since_does_not_open_older_partitions(outputs, tmp_path):
    """Corrupt every file of the older days: a --since query must still work (it never opens
    them), while an unbounded query fails on them (so the corruption is real)."""
    out, rows, _ = outputs
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    corrupted = 0
    for day in ("2024-05-01", "2024-05-02"):
        for f in (copy / PREDICTIONS / f"date={day}").glob("*.parquet"):
            f.write_bytes(b"not parquet at all")
            corrupted += 1
    assert corrupted >= 4
    # Row modes (every row, one version's rows) prune; one row per frame ("current", the
    # default) picks over every row of a frame, so it reads every file's footer.
    got = read_predictions(copy, since="2024-05-03", labels=["dummy"], model_version="all")
    assert keys(got) == keys([r for r in rows if r["date"] >= date(2024, 5, 3)
                              and r["label"] == "dummy"])
    assert read_predictions(copy, since="2024-05-03T12:00", limit=3,
                            model_version="all").num_rows == 3
    assert read_predictions(copy, since="2024-05-03", model_version="v0003").num_rows == \
        sum(r["date"] >= date(2024, 5, 3) and r["model_version"] == "v0003" for r in rows)
    with pytest.raises(QueryError, match="--model-version all or a version"):
        read_predictions(copy, since="2024-05-03")
    with pytest.raises(QueryError, match="cannot read the predictions dataset"):
        read_predictions(copy, model_version="all")
    with pytest.raises(QueryError):
        read_predictions(copy, until="2024-05-02", model_version="all")


def test_staging_and_hidden_files_are_ignored(outputs, tmp_path):
    out, rows, _ = outputs
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    pdir = copy / PREDICTIONS
    (pdir / "_staging").mkdir()
    (pdir / "_staging" / "part-00000.parquet").write_bytes(b"half written")
    (pdir / "date=2024-05-01" / ".part-9.parquet.tmp").write_bytes(b"junk")
    (pdir / "date=2024-05-01" / ".part-9.parquet").write_bytes(b"junk")
    (pdir / "date=2024-05-01" / "_SUCCESS").write_bytes(b"")
    (pdir / "README.txt").write_text("notes")
    (pdir / "date=2024-13-01").mkdir()  # not a partition of the layout
    (pdir / "date=2024-13-01" / "part-0.parquet").write_bytes(b"junk")
    (pdir / "old").mkdir()
    (pdir / "old" / "part-0.parquet").write_bytes(b"junk")
    files = list_parquet_files(pdir)
    assert all("/_" not in f and "/." not in f and "13-01" not in f and "/old/" not in f
               for f in files)
    assert keys(read_predictions(copy)) == keys(rows)


@pytest.mark.parametrize("kwargs, message", [
    ({"labels": ["dumy"]}, "unknown label 'dumy' (did you mean 'dummy'?)"),
    ({"columns": ["label", "confidnce"]}, "unknown column 'confidnce'"),
    ({"order_by": "nope"}, "unknown column 'nope'"),
    ({"order_by": "probabilities"}, "cannot order by 'probabilities'"),
    ({"order_by": "label:up"}, "bad order 'up'"),
    ({"since": "2024-5-1"}, "malformed date '2024-5-1'"),
    ({"until": "2024-02-30"}, "malformed date '2024-02-30'"),
    ({"since": "last tuesday"}, "malformed date"),
    ({"limit": -1}, "--limit"),
])
def test_user_errors_are_one_line(outputs, kwargs, message):
    out, _, _ = outputs
    with pytest.raises(QueryError) as info:
        read_predictions(out, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_reason(outputs):
    with pytest.raises(QueryError, match="unknown reason 'trunc'"):
        read_rejections(outputs[0], reasons=["trunc"])


def test_missing_and_empty_outputs(tmp_path):
    with pytest.raises(NoData, match="does not exist"):
        read_predictions(tmp_path / "nowhere")
    (tmp_path / "out" / PREDICTIONS / "date=2024-05-01").mkdir(parents=True)
    with pytest.raises(NoData, match="no predictions under"):
        read_predictions(tmp_path / "out")
    with pytest.raises(NoData, match="no rejections under"):
        read_rejections(tmp_path / "out")


def test_parse_when_forms():
    now = utc(2024, 5, 10, 12, 0)
    assert parse_when("today", now) == (utc(2024, 5, 10), True)
    assert parse_when("yesterday", now) == (utc(2024, 5, 9), True)
    assert parse_when("36h", now) == (now - timedelta(hours=36), False)
    assert parse_when("7d", now) == (now - timedelta(days=7), False)
    assert parse_when("2024-05-01", now) == (utc(2024, 5, 1), True)
    assert parse_when("2024-05-01T08:00Z", now) == (utc(2024, 5, 1, 8), False)
    assert parse_when(datetime(2024, 5, 1, 8), now) == (utc(2024, 5, 1, 8), False)


@pytest.mark.parametrize("pattern", ["*", "batch_1/*", "*.npy", "a?c", "[ab]*", "[!a]x",
                                     "x[]]y", "weird.(name)+", "[a-c]/**/z", "un[closed"])
def test_glob_regex_matches_fnmatch(pattern):
    import re

    names = ["abc", "a/c", "batch_1/s1/t.npy", "batch_10/x.npy", "x]y", "bx", "ax",
             "weird.(name)+", "b/q/r/z", "c/z", "un[closed", "", ".npy", "a.c"]
    rx = re.compile(glob_to_regex(pattern), re.S)
    for name in names:
        assert bool(rx.match(name)) == fnmatch.fnmatchcase(name, pattern), (pattern, name)


def test_parse_order_by():
    assert parse_order_by("a, -b,c:desc,d:asc") == [
        ("a", "ascending"), ("b", "descending"), ("c", "descending"), ("d", "ascending")]
    assert parse_order_by(None) == []


def test_label_list_is_the_spec(outputs):
    out, rows, _ = outputs
    for label in class_names():
        assert read_predictions(out, labels=[label], columns=["label"]).num_rows == \
            sum(r["label"] == label for r in rows)


@pytest.fixture(scope="module")
def s3_output(outputs):
    """The same output folder uploaded to a moto S3 server on loopback (no network)."""
    import os
    from unittest import mock

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        with mock.patch.dict(os.environ, env):
            import boto3

            s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
            s3.create_bucket(Bucket="poses")
            out = outputs[0]
            for f in sorted(out.rglob("*.parquet")):
                s3.upload_file(str(f), "poses", f"nightly/{f.relative_to(out).as_posix()}")
            s3.put_object(Bucket="poses", Key="nightly/predictions/_staging/part-x.parquet",
                          Body=b"half written")
            yield "s3://poses/nightly"
    finally:
        server.stop()


def test_s3_output_reads_like_a_local_folder(outputs, s3_output):
    from tasks.read.sql import run_sql

    out, rows, _ = outputs
    got = read_predictions(s3_output, since="2024-05-03", labels=["dummy"])
    assert keys(got) == keys([r for r in rows if r["date"] >= date(2024, 5, 3)
                              and r["label"] == "dummy"])
    n = run_sql(s3_output, "SELECT count(*) AS n FROM predictions WHERE date >= '2024-05-03'")
    assert n.column("n")[0].as_py() == sum(r["date"] >= date(2024, 5, 3) for r in rows)
    with pytest.raises(NoData, match="s3://poses/elsewhere"):
        read_predictions("s3://poses/elsewhere")
