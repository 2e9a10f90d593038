"""``posebatch query|sql|report|show`` through the real CLI app (typer's CliRunner)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.io.schema import PREDICTIONS, REJECTIONS
from tasks.synth.sample_outputs import (
    day_of,
    synth_predictions,
    synth_rejections,
    write_partitioned,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[dict]]:
    """A data root whose output/ holds 3 days of predictions and rejections."""
    root = tmp_path_factory.mktemp("cli_data")
    pred = synth_predictions(900, date(2024, 5, 1), 3, seed=21)
    rej = synth_rejections(30, date(2024, 5, 1), 3, seed=22)
    write_partitioned(pred, root / "output", PREDICTIONS, rows_per_file=200)
    write_partitioned(rej, root / "output", REJECTIONS)
    prow = pred.to_pylist()
    for r, d in zip(prow, day_of(pred, "classified_at"), strict=True):
        r["date"] = str(d)
    return root, prow, rej.to_pylist()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def user_error(code: int, stdout: str, stderr: str, text: str) -> None:
    """Exit 2, one `error:` line (the last on stderr, after any progress lines) naming the
    problem, no traceback."""
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert text in errors[0]
    assert "Traceback" not in stdout + stderr


def test_filters_to_csv_equal_plain_python(data):
    root, rows, _ = data
    code, out, err = run("query", "--data", str(root), "--since", "2024-05-02",
                         "--label", "dummy", "--label", "action_up", "--min-confidence", "0.3",
                         "--path", "batch_00[12]/*", "--format", "csv")
    assert code == 0, err
    got = list(csv.DictReader(io.StringIO(out)))
    want = [r for r in rows if r["date"] >= "2024-05-02" and r["label"] in ("dummy", "action_up")
            and r["confidence"] >= 0.3 and r["batch"] in ("batch_001", "batch_002")]
    assert want
    assert sorted(g["source_path"] for g in got) == sorted(r["source_path"] for r in want)
    # List columns become JSON text in CSV.
    assert all(len(json.loads(g["probabilities"])) == 17 for g in got)


def test_aligned_table_and_row_cap(data):
    root, rows, _ = data
    code, out, err = run("query", "--data", str(root), "--batch", "batch_003",
                         "--order-by", "-confidence", "--limit", "5")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["date", "source_path", "frame_index", "label"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    best = sorted((r for r in rows if r["batch"] == "batch_003"),
                  key=lambda r: -r["confidence"])[:5]
    assert [ln.split()[1] for ln in lines[2:]] == [r["source_path"] for r in best]
    code, out, err = run("query", "--data", str(root))
    assert code == 0 and len(out.strip().splitlines()) == 2 + 200
    assert "showing the first 200 rows" in err


def test_json_lines_parquet_file_and_json_object(data, tmp_path):
    root, rows, _ = data
    code, out, _ = run("query", "--data", str(root), "--model-version", "v0002",
                       "--format", "json", "--columns", "source_path,model_version,date")
    assert code == 0
    got = [json.loads(line) for line in out.splitlines()]
    assert sorted(g["source_path"] for g in got) == sorted(
        r["source_path"] for r in rows if r["model_version"] == "v0002")
    assert set(got[0]) == {"source_path", "model_version", "date"}

    target = tmp_path / "sub" / "low.parquet"
    code, out, _ = run("query", "--data", str(root), "--max-confidence", "0.5",
                       "--to", str(target), "--json")
    result = last_json(out)
    table = pq.read_table(target)
    want = [r for r in rows if r["confidence"] <= 0.5]
    assert result == {"ok": True, "rows": len(want), "path": str(target), "format": "parquet",
                      "dataset": "predictions", "model_version": "current"}
    assert sorted(table.column("source_path").to_pylist()) == sorted(
        r["source_path"] for r in want)

    code, out, _ = run("query", "--data", str(root), "--until", "2024-05-01T06:00",
                       "--json")
    result = last_json(out)
    cut = datetime(2024, 5, 1, 6, tzinfo=UTC)
    want = [r for r in rows if r["classified_at"] <= cut]
    assert result["rows"] == len(want) == len(result["records"])
    assert {r["source_path"] for r in result["records"]} == {r["source_path"] for r in want}


def test_summary_with_threshold_from_settings_and_flag(data):
    root, rows, _ = data
    code, out, _ = run("query", "--data", str(root), "--summary", "--json",
                       env={"POSEBATCH_LOW_CONFIDENCE": "0.8"})
    result = last_json(out)
    assert result["low_confidence"] == 0.8 and result["frames"] == len(rows)
    for g in result["records"]:
        conf = [r["confidence"] for r in rows if r["date"] == g["date"]
                and r["label"] == g["label"]]
        assert g["frames"] == len(conf)
        assert g["mean_confidence"] == pytest.approx(np.mean(conf))
        assert g["low_confidence_share"] == pytest.approx(np.mean(np.array(conf) < 0.8))
    assert sum(g["frames"] for g in result["records"]) == len(rows)
    code, out, _ = run("query", "--data", str(root), "--summary", "--low-confidence", "0.2",
                       "--label", "dummy", "--format", "csv")
    got = list(csv.DictReader(io.StringIO(out)))
    assert {g["label"] for g in got} == {"dummy"}
    for g in got:
        conf = np.array([r["confidence"] for r in rows if r["date"] == g["date"]
                         and r["label"] == "dummy"])
        assert float(g["low_confidence_share"]) == pytest.approx(np.mean(conf < 0.2))


def test_rejections(data):
    root, _, rej = data
    code, out, _ = run("query", "--data", str(root), "--rejections", "--reason", "truncated",
                       "--reason", "not_npy", "--format", "csv")
    got = list(csv.DictReader(io.StringIO(out)))
    assert sorted(g["source_path"] for g in got) == sorted(
        r["source_path"] for r in rej if r["reason"] in ("truncated", "not_npy"))


@pytest.mark.parametrize("args, text", [
    (["--label", "dumy"], "unknown label 'dumy'"),
    (["--since", "01/05/2024"], "malformed date '01/05/2024'"),
    (["--columns", "label,nope"], "unknown column 'nope'"),
    (["--order-by", "nope"], "unknown column 'nope'"),
    (["--rejections", "--label", "dummy"], "--label do not apply to --rejections"),
    (["--reason", "truncated"], "add --rejections"),
    (["--format", "xml"], "unknown --format 'xml'"),
    (["--summary", "--order-by", "confidence"], "unknown column 'confidence' for --summary"),
])
def test_user_errors(data, args, text):
    root, _, _ = data
    user_error(*run("query", "--data", str(root), *args), text)


def test_missing_and_empty_output(tmp_path):
    user_error(*run("query", "--output", str(tmp_path / "none")), "does not exist")
    (tmp_path / "out").mkdir()
    user_error(*run("query", "--output", str(tmp_path / "out")), "no predictions under")
    code, out, err = run("query", "--output", str(tmp_path / "out"), "--json")
    assert code == 2 and last_json(out)["ok"] is False
    user_error(*run("sql", "--output", str(tmp_path / "out"), "SELECT 1"),
               "no predictions or rejections")
    user_error(*run("report", "--output", str(tmp_path / "out"), "--to",
                    str(tmp_path / "r.html")), "no predictions or rejections")


def test_sql(data):
    root, rows, _ = data
    code, out, _ = run("sql", "--data", str(root), "--json",
                       "SELECT label, count(*) AS n FROM predictions "
                       "WHERE date >= '2024-05-02' GROUP BY label ORDER BY label")
    result = last_json(out)
    want = {}
    for r in rows:
        if r["date"] >= "2024-05-02":
            want[r["label"]] = want.get(r["label"], 0) + 1
    assert {g["label"]: g["n"] for g in result["records"]} == want
    code, out, _ = run("sql", "--data", str(root),
                       "SELECT reason, count(*) AS n FROM rejections GROUP BY 1 ORDER BY 1")
    assert code == 0 and out.splitlines()[0].split() == ["reason", "n"]
    user_error(*run("sql", "--data", str(root), "SELEC 1"), "SQL: Parser Error")


def test_sql_writes_the_result_not_the_query(data, tmp_path):
    root, rows, _ = data
    target = tmp_path / "by_label.csv"
    code, out, err = run("sql", "--data", str(root), "--to", str(target), "--json",
                         "SELECT label, count(*) AS n FROM predictions GROUP BY 1 ORDER BY 1")
    assert code == 0, err
    assert last_json(out)["path"] == str(target)
    got = {r["label"]: int(r["n"]) for r in csv.DictReader(io.StringIO(target.read_text()))}
    assert sum(got.values()) == len(rows)
    copied = tmp_path / "copied.csv"
    user_error(*run("sql", "--data", str(root), f"COPY predictions TO '{copied}'"),
               "SQL refused: COPY statement")
    user_error(*run("sql", "--data", str(root), "SELECT * FROM read_csv('/etc/passwd')"),
               "SQL refused: reading file '/etc/passwd'")
    assert not copied.exists()


def test_report_command(data, tmp_path):
    root, rows, _ = data
    target = tmp_path / "report.html"
    code, out, err = run("report", "--data", str(root), "--since", "2024-05-02", "--to",
                         str(target), "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["path"] == str(target) and result["training_distribution"] is False
    assert result["frames"] == sum(r["date"] >= "2024-05-02" for r in rows)
    page = target.read_text()
    assert "no training distribution recorded" in page
    assert page.count("data:image/png;base64,") == 5


def test_show_without_model(tmp_path):
    from tasks.read.viewer import image_size
    from tasks.synth.generate import synth_frames

    frames = synth_frames(["dummy", "action_up"], seed=1)
    npy = tmp_path / "two.npy"
    np.save(npy, frames)
    png = tmp_path / "out" / "two.png"
    code, out, err = run("show", str(npy), "--frame", "1", "--to", str(png), "--json",
                         "--data", str(tmp_path / "data"))
    assert code == 0, err
    result = last_json(out)
    assert result["prediction"] == [] and result["frames"] == 2 and result["frame"] == 1
    from PIL import Image

    with Image.open(png) as img:
        assert img.size == image_size()
    user_error(*run("show", str(npy), "--frame", "2", "--data", str(tmp_path)),
               "out of range")
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    user_error(*run("show", str(bad), "--data", str(tmp_path)), "bad_dtype")
    user_error(*run("show", str(tmp_path / "none.npy"), "--data", str(tmp_path)),
               "is not a file")


@pytest.mark.slow
def test_show_with_a_registered_model(tmp_path):
    from models.network import build_cnn
    from models.registry import Registry
    from models.spec import class_names
    from tasks.synth.generate import synth_frames

    reg = Registry(tmp_path / "data" / "registry")
    model = build_cnn(17, filters=(4, 4, 4), dense=8)
    entry = reg.register(model, {"class_names": class_names(), "temperature": 1.7})
    reg.set_production(entry.version, "test")
    frame = synth_frames(["category_sound"], seed=3)
    npy = tmp_path / "one.npy"
    np.save(npy, frame)
    png = tmp_path / "one.png"
    code, out, err = run("show", str(npy), "--to", str(png), "--json",
                         "--data", str(tmp_path / "data"))
    assert code == 0, err
    result = last_json(out)
    logits = np.asarray(model(frame, training=False))[0] / 1.7
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p)[:3]
    assert result["model_version"] == entry.version
    assert [x["label"] for x in result["prediction"]] == [class_names()[i] for i in order]
    assert [x["probability"] for x in result["prediction"]] == pytest.approx(
        [float(p[i]) for i in order], rel=1e-4)
    assert png.stat().st_size > 10_000
    user_error(*run("show", str(npy), "--model", "v0099", "--data", str(tmp_path / "data")),
               "no model version 'v0099'")
