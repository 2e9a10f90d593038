"""``--model-version`` on query/sql/report and ``posebatch diff`` through the real CLI app,
over a generated re-scoring history with v0002 as the registry's production version."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.flows.cli.test_query_cli import last_json, run, user_error
from tests.support.history import expected_pick, frame_key, write_history


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("versions_cli")
    rows = write_history(root / "output")
    (root / "registry").mkdir()
    (root / "registry" / "production.json").write_text(json.dumps({"version": "v0002"}))
    return root, rows


@pytest.mark.parametrize("args, want", [
    ([], lambda rows: list(expected_pick(rows, "v0002").values())),
    (["--model-version", "current"], lambda rows: list(expected_pick(rows, "v0002").values())),
    (["--model-version", "latest"], lambda rows: list(expected_pick(rows, None).values())),
    (["--model-version", "all"], lambda rows: rows),
    (["--model-version", "production"], lambda rows: [r for r in rows
                                                      if r["model_version"] == "v0002"]),
    (["--model-version", "v0003"], lambda rows: [r for r in rows
                                                 if r["model_version"] == "v0003"]),
    (["--model-version", "v0001", "--model-version", "v0003"],
     lambda rows: [r for r in rows if r["model_version"] != "v0002"]),
])
def test_query_model_version_json(data, args, want):
    root, rows = data
    code, out, err = run("query", "--data", str(root), *args, "--json", "--columns",
                         "source_path,content_sha256,frame_index,model_version")
    assert code == 0, err
    result = last_json(out)
    expected = want(rows)
    assert result["rows"] == len(expected)
    assert Counter((r["source_path"], r["frame_index"], r["model_version"])
                   for r in result["records"]) == Counter(
        (r["source_path"], r["frame_index"], r["model_version"]) for r in expected)


def test_summary_and_sql_count_frames_once(data):
    root, rows = data
    frames = len({frame_key(r) for r in rows})
    code, out, _ = run("query", "--data", str(root), "--summary", "--json")
    result = last_json(out)
    assert result["frames"] == frames == sum(g["frames"] for g in result["records"])
    code, out, _ = run("sql", "--data", str(root), "--json",
                       "SELECT (SELECT count(*) FROM predictions) AS cur, "
                       "(SELECT count(*) FROM predictions_all) AS every")
    assert last_json(out)["records"] == [{"cur": frames, "every": len(rows)}]
    code, out, _ = run("sql", "--data", str(root), "--model-version", "v0003", "--json",
                       "SELECT count(*) AS n FROM predictions")
    assert last_json(out)["records"] == [{"n": sum(r["model_version"] == "v0003"
                                                   for r in rows)}]


@pytest.mark.parametrize("command", [["query"], ["sql", "SELECT 1"], ["report"]])
def test_unknown_version_is_one_line(data, tmp_path, command):
    root, _ = data
    extra = ["--to", str(tmp_path / "r.html")] if command == ["report"] else []
    user_error(*run(*command, "--data", str(root), "--model-version", "v0004", *extra),
               "unknown model version 'v0004' (did you mean 'v0003'?): versions found in "
               "the predictions are v0001, v0002, v0003")


def test_mode_mixed_with_versions_and_rejections(data):
    root, _ = data
    user_error(*run("query", "--data", str(root), "--model-version", "all",
                    "--model-version", "v0001"), "cannot be combined")
    user_error(*run("query", "--data", str(root), "--rejections", "--model-version", "all"),
               "--model-version do not apply to --rejections")


def test_diff_json_and_human(data, tmp_path):
    from tasks.read.diff import compare, read_pair

    root, _ = data
    png = tmp_path / "flips.png"
    code, out, err = run("diff", "--data", str(root), "--png", str(png), "--limit", "3",
                         "--json")
    assert code == 0, err
    result = last_json(out)
    want = compare(*read_pair(root / "output", "v0001", "v0002"), limit=3)
    assert result["ok"] and result["png"] == str(png)
    assert {k: v for k, v in result.items() if k not in ("ok", "png")} == \
        json.loads(json.dumps(want))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = run("diff", "--data", str(root), "--from", "v0002", "--to", "v0003",
                         "--min-confidence", "0.9", "--png", str(png))
    assert code == 0, err
    assert out.startswith("v0002 -> v0003: 120 frames scored by both")
    assert "Label flips (old -> new)" in out and "Flips with new confidence >= 0.9" in out
    user_error(*run("diff", "--data", str(root), "--from", "v0009"),
               "--from v0009: no predictions")
    user_error(*run("diff", "--data", str(root), "--since", "2030-01-01"),
               "has no predictions in the --since/--until range")


def test_report_has_the_diff_section(data, tmp_path):
    root, rows = data
    target = tmp_path / "report.html"
    code, out, err = run("report", "--data", str(root), "--to", str(target), "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["frames"] == len({frame_key(r) for r in rows})
    assert result["diff"]["from_version"] == "v0001" and result["diff"]["to_version"] == "v0002"
    page = target.read_text()
    assert "Model versions: v0001 → v0002" in page
    assert "Confidence shift per old label" in page and "High-confidence flips" in page
    # four prediction plots (no rejections, no training mix here) and the flip matrix
    assert page.count("data:image/png;base64,") == 5
    assert 'alt="label flips v0001 to v0002"' in page
