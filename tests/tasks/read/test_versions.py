"""Version-aware reading over a generated re-scoring history: every ``model_version`` mode of
``read_predictions`` against the documented rule in plain Python, and the DuckDB views
against the Python API."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tasks.read.query import QueryError, model_versions_in, read_predictions
from tasks.read.sql import current_view_sql, run_sql
from tests.support.history import expected_pick, frame_key, write_history

PROD = "v0002"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("history")
    return out, write_history(out)


def picked(table) -> dict[tuple, tuple]:
    rows = table.to_pylist()
    got = {frame_key(r): (r["model_version"], r["classified_at"]) for r in rows}
    assert len(got) == len(rows), "one row per frame"
    return got


def ident(rows: dict[tuple, dict]) -> dict[tuple, tuple]:
    return {k: (r["model_version"], r["classified_at"]) for k, r in rows.items()}


def test_history_is_what_the_tests_assume(history):
    out, rows = history
    assert model_versions_in(out) == ["v0001", "v0002", "v0003"]
    per_frame = Counter(frame_key(r) for r in rows)
    assert max(per_frame.values()) == 3 and min(per_frame.values()) == 1


def test_current_is_production_else_latest(history):
    out, rows = history
    got = read_predictions(out, production=PROD)
    assert picked(got) == ident(expected_pick(rows, PROD))
    frames = {frame_key(r) for r in rows}
    assert got.num_rows == len(frames)
    versions = Counter(got.column("model_version").to_pylist())
    # production wins where it scored; v0003 where only v0001/v0003 did; v0001 elsewhere
    assert versions == {"v0002": 360, "v0003": 120, "v0001": 120}


def test_latest_and_current_without_production(history):
    out, rows = history
    latest = picked(read_predictions(out, model_version="latest", production=PROD))
    assert latest == ident(expected_pick(rows, None))
    assert picked(read_predictions(out)) == latest  # no registry: current is latest
    # the tie (v0002 and v0003 at the same instant) goes to the larger version
    tied = [k for k, v in Counter((frame_key(r), r["classified_at"]) for r in rows).items()
            if v > 1]
    assert len(tied) == 1
    assert latest[tied[0][0]][0] == "v0003"


@pytest.mark.parametrize("mode, keep", [
    ("all", lambda r: True),
    ("production", lambda r: r["model_version"] == PROD),
    ("v0003", lambda r: r["model_version"] == "v0003"),
    ("v0001", lambda r: r["model_version"] == "v0001"),
])
def test_row_modes(history, mode, keep):
    out, rows = history
    got = read_predictions(out, model_version=mode, production=PROD)
    want = sorted((frame_key(r), r["model_version"]) for r in rows if keep(r))
    assert sorted((frame_key(r), r["model_version"]) for r in got.to_pylist()) == want


def test_filters_apply_after_the_pick(history):
    """--label/--since select among the current rows (as SQL over the view does)."""
    out, rows = history
    current = list(expected_pick(rows, PROD).values())
    got = read_predictions(out, production=PROD, labels=["dummy"],
                           columns=["source_path", "label", "model_version"])
    assert got.column_names == ["source_path", "label", "model_version"]
    assert sorted(got.column("source_path").to_pylist()) == sorted(
        r["source_path"] for r in current if r["label"] == "dummy")
    since = read_predictions(out, production=PROD, since="2024-06-04")
    assert picked(since) == ident({frame_key(r): r for r in current
                                   if str(r["date"]) >= "2024-06-04"})
    top = read_predictions(out, production=PROD, order_by="-confidence", limit=5)
    assert top.column("confidence").to_pylist() == sorted(
        (r["confidence"] for r in current), reverse=True)[:5]


def test_model_versions_filter_narrows_before_the_pick(history):
    out, rows = history
    got = read_predictions(out, production=PROD, model_versions=["v0001", "v0003"])
    want = expected_pick([r for r in rows if r["model_version"] != PROD], PROD)
    assert picked(got) == ident(want)
    only = read_predictions(out, model_versions=["v0002"], columns=["model_version"])
    assert only.num_rows == sum(r["model_version"] == "v0002" for r in rows)


@pytest.mark.parametrize("kwargs, message", [
    ({"model_version": "v0004"}, "unknown model version 'v0004' (did you mean 'v0003'?): "
                                 "versions found in the predictions are v0001, v0002, v0003"),
    ({"model_version": "production"}, "no production model is registered"),
    ({"model_version": "production", "production": "v0009"},
     "the production model v0009 has no predictions"),
])
def test_version_errors_are_one_line(history, kwargs, message):
    with pytest.raises(QueryError) as info:
        read_predictions(history[0], **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("mode", ["current", "latest", "all", "production", "v0001"])
def test_duckdb_views_count_like_the_python_api(history, mode):
    out, _ = history
    sql = run_sql(out, "SELECT model_version, label, count(*) AS n FROM predictions "
                       "GROUP BY ALL", mode, PROD)
    got = {(r["model_version"], r["label"]): r["n"] for r in sql.to_pylist()}
    table = read_predictions(out, model_version=mode, production=PROD,
                             columns=["model_version", "label"])
    assert got == dict(Counter(zip(table.column("model_version").to_pylist(),
                                   table.column("label").to_pylist(), strict=True)))
    assert run_sql(out, "SELECT count(*) AS n FROM predictions_all", mode, PROD) \
        .column("n")[0].as_py() == 1200
    n = run_sql(out, "SELECT count(*) AS n FROM predictions WHERE date >= '2024-06-04'",
                mode, PROD).column("n")[0].as_py()
    assert n == read_predictions(out, model_version=mode, production=PROD,
                                 since="2024-06-04", columns=["label"]).num_rows


def test_documented_sql_is_the_view(history):
    """The README's plain SQL over predictions_all gives the same rows as the view."""
    out, rows = history
    got = run_sql(out, f"SELECT source_path, content_sha256, frame_index, model_version, "
                       f"classified_at FROM ({current_view_sql(PROD)}) AS v", "all")
    assert picked(got) == ident(expected_pick(rows, PROD))


def test_unknown_version_in_sql(history):
    with pytest.raises(QueryError, match="unknown model version 'v7'"):
        run_sql(history[0], "SELECT 1", "v7")


def test_single_version_skips_the_pick(tmp_path, monkeypatch):
    """One version in the data (proved from the footers): no key scan, no pick."""
    from datetime import date

    import tasks.read.query as q
    from tasks.io.schema import PREDICTIONS
    from tasks.synth.sample_outputs import synth_predictions, write_partitioned

    write_partitioned(synth_predictions(400, date(2024, 5, 1), 2, seed=1,
                                        model_versions=("v0001",)), tmp_path, PREDICTIONS)
    called = []
    monkeypatch.setattr(q, "_losers", lambda *a: called.append(a))
    assert read_predictions(tmp_path, production="v0002").num_rows == 400
    assert called == []
