"""``posebatch sql``'s engine: DuckDB views over the same files read_predictions sees, and a
connection that reads nothing else and writes nothing (local and ``s3://`` outputs)."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from tasks.io.schema import PREDICTIONS, REJECTIONS
from tasks.read.query import NoData, QueryError, read_predictions
from tasks.read.sql import connect, run_sql
from tasks.synth.sample_outputs import synth_predictions, synth_rejections, write_partitioned
from tests.support.ops import moto_s3, upload_tree


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sql_out")
    write_partitioned(synth_predictions(1500, date(2024, 7, 1), 3, seed=9), root, PREDICTIONS,
                      rows_per_file=400)
    write_partitioned(synth_rejections(30, date(2024, 7, 1), 3, seed=9), root, REJECTIONS)
    return root


def test_views_hold_the_same_rows_as_read_predictions(out):
    got = run_sql(out, "SELECT label, count(*) AS n FROM predictions GROUP BY label")
    ref = Counter(read_predictions(out, columns=["label"]).column("label").to_pylist())
    assert dict(zip(got.column("label").to_pylist(), got.column("n").to_pylist(),
                    strict=True)) == dict(ref)


def test_date_is_a_hive_partition_column(out):
    got = run_sql(out, "SELECT date AS d, count(*) AS n FROM predictions "
                       "WHERE date >= DATE '2024-07-02' GROUP BY 1 ORDER BY 1")
    ref = Counter(read_predictions(out, since="2024-07-02", columns=["date"])
                  .column("date").to_pylist())
    assert got.column("d").to_pylist() == sorted(ref)
    assert got.column("n").to_pylist() == [ref[d] for d in sorted(ref)]
    typ = run_sql(out, "SELECT typeof(date) AS t FROM predictions LIMIT 1")
    assert typ.column("t").to_pylist() == ["DATE"]


def test_rejections_view_and_join(out):
    got = run_sql(out, "SELECT reason, count(*) AS n FROM rejections GROUP BY 1")
    assert sum(got.column("n").to_pylist()) == 30
    joined = run_sql(out, "SELECT count(*) AS n FROM predictions p "
                          "JOIN rejections r USING (content_sha256)")
    assert joined.column("n").to_pylist() == [0]


def test_partition_filter_prunes_in_duckdb_too(out, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for f in (copy / PREDICTIONS / "date=2024-07-01").glob("*.parquet"):
        f.write_bytes(b"garbage")
    # With --model-version all nothing is picked per frame, so no footer is read up front
    # and both row views prune (the default view reads every footer to find the versions).
    ok = run_sql(copy, "SELECT count(*) AS n FROM predictions_all WHERE date >= '2024-07-02'",
                 "all")
    assert ok.column("n").to_pylist() == run_sql(
        copy, "SELECT count(*) AS n FROM predictions WHERE date >= '2024-07-02'", "all"
    ).column("n").to_pylist()
    assert ok.column("n").to_pylist() == [
        read_predictions(out, since="2024-07-02", columns=["label"]).num_rows]
    with pytest.raises(QueryError, match="^SQL: "):
        run_sql(copy, "SELECT count(*) FROM predictions_all", "all")
    with pytest.raises(QueryError, match="--model-version all"):
        run_sql(copy, "SELECT count(*) FROM predictions_all WHERE date >= '2024-07-02'")


def test_missing_dataset_is_an_empty_view(out, tmp_path):
    only = tmp_path / "only"
    shutil.copytree(out / PREDICTIONS, only / PREDICTIONS)
    (only / PREDICTIONS / "_staging").mkdir()
    (only / PREDICTIONS / "_staging" / "part-0.parquet").write_bytes(b"in progress")
    empty = run_sql(only, "SELECT * FROM rejections")
    assert empty.num_rows == 0 and "reason" in empty.column_names
    assert run_sql(only, "SELECT count(*) AS n FROM predictions").column("n")[0].as_py() == 1500


def test_errors(out, tmp_path):
    with pytest.raises(NoData, match="does not exist"):
        run_sql(tmp_path / "none", "SELECT 1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoData, match="no predictions or rejections"):
        run_sql(tmp_path / "empty", "SELECT 1")
    with pytest.raises(QueryError, match="nope") as info:
        run_sql(out, "SELECT nope FROM predictions")
    assert "\n" not in str(info.value)


# --- confinement: the connection reads the output's views and nothing else, writes nothing --

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_sql() -> list[str]:
    """The statements the README runs through `posebatch sql`, and its current-view SQL."""
    text = README.read_text(encoding="utf-8")
    found = re.findall(r'^posebatch sql "(.+?)"\s*$', text, flags=re.M)
    found += re.findall(r"^```sql\n(.+?)```", text, flags=re.M | re.S)
    return found


def test_the_readme_sql_examples_still_run(out):
    statements = readme_sql()
    assert len(statements) >= 2, "the README lost its SQL examples"
    for statement in statements:
        assert run_sql(out, statement).num_rows > 0, statement


@pytest.mark.parametrize(("statement", "named"), [
    ("COPY (SELECT * FROM predictions) TO '{target}'", "COPY statement"),
    ("ATTACH '{target}' AS other", "ATTACH statement"),
    ("INSTALL httpfs", "INSTALL statement"),
    ("LOAD parquet", "LOAD statement"),
    ("SET enable_external_access = true", "SET statement"),
    ("SELECT 1; RESET lock_configuration", "RESET statement"),
    ("CREATE TABLE kept AS SELECT * FROM predictions", "CREATE statement"),
])
def test_a_statement_that_is_not_a_read_is_refused_by_name(out, tmp_path, statement, named):
    target = tmp_path / "written"
    with pytest.raises(QueryError, match=f"^SQL refused: {named} ") as info:
        run_sql(out, statement.format(target=target))
    assert "\n" not in str(info.value) and "--to FILE" in str(info.value)
    assert not target.exists()


def test_a_file_outside_the_views_is_refused_even_inside_the_output(out, tmp_path):
    beside = tmp_path / "secret.csv"
    beside.write_text("a\n1\n")
    part = next((out / PREDICTIONS).rglob("*.parquet"))
    for statement in (f"SELECT count(*) FROM read_csv('{beside}')",
                      "SELECT count(*) FROM read_text('/etc/passwd')",
                      f"SELECT count(*) FROM read_parquet('{part}')",
                      f"SELECT * FROM glob('{out}/**')"):
        with pytest.raises(QueryError, match="^SQL refused: reading file '") as info:
            run_sql(out, statement)
        assert "\n" not in str(info.value)


def test_the_python_api_connection_is_locked_too(out, tmp_path):
    import duckdb

    con, _ = connect(out)
    try:
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'")
        with pytest.raises(duckdb.PermissionException):
            con.execute("LOAD httpfs")
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute("SET enable_external_access = true")
        assert con.sql("SELECT current_setting('enable_external_access')").fetchall() \
            == [(False,)]
    finally:
        con.close()
    assert not (tmp_path / "x.csv").exists()


def test_an_s3_output_is_confined_the_same_way(out):
    import boto3

    with moto_s3("poses") as endpoint:
        upload_tree(out, "s3://poses/nightly")
        uri = "s3://poses/nightly"
        n = run_sql(uri, "SELECT count(*) AS n FROM predictions WHERE date >= '2024-07-02'")
        assert n.column("n").to_pylist() == [
            read_predictions(out, since="2024-07-02", columns=["label"]).num_rows]
        for statement in ("SELECT count(*) FROM read_csv('/etc/passwd')",
                          f"SELECT count(*) FROM read_parquet('{uri}/predictions/**')"):
            with pytest.raises(QueryError, match="^SQL refused: reading file '"):
                run_sql(uri, statement)
        with pytest.raises(QueryError, match="^SQL refused: COPY statement "):
            run_sql(uri, f"COPY (SELECT 1) TO '{uri}/x.csv'")
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=endpoint)
                .list_objects_v2(Bucket="poses")["Contents"]]
        assert keys and not any(k.endswith("x.csv") for k in keys)
