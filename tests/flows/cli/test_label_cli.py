"""``posebatch label suggest|import|audit`` from the command line, on a local output and on
one in object storage (moto on loopback): --help, --json, one-line refusals, and the loop
closed: the suggested frames, labeled, are recorded once and mirrored as a folder."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from models.spec import class_names
from tests.support.adapt_support import commit_files, write_inputs
from tests.support.ops import upload_tree

NAMES = class_names()
FILES = {"b1/a.npy": 4, "b1/b.npy": 3, "b2/c.npy": 4, "b3/e.npy": 5}


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    write_inputs(tmp_path / "incoming", FILES)
    commit_files(tmp_path / "incoming", tmp_path / "output", sorted(FILES),
                 datetime(2026, 11, 30, tzinfo=UTC), "c1")
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(app, ["label", *args])


def last_json(res) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])


def fill_csv(path: str) -> None:
    rows = list(csv.DictReader(open(path)))
    for k, r in enumerate(rows):
        r["label"] = NAMES[k % 4]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_help_and_refusals(site: Path):
    for cmd in ("suggest", "import", "audit"):
        res = invoke(cmd, "--help")
        assert res.exit_code == 0 and "--json" in res.stdout
    res = invoke("suggest", "--data", str(site), "--to", "s3://poses/sheet", "--json")
    assert res.exit_code == 2 and "only a local folder" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = invoke("suggest", "--data", str(site), "--strategy", "loudest")
    assert res.exit_code == 2 and "--strategy loudest" in res.stderr
    (site / "bad.csv").write_text("a,b\n1,2\n")
    res = invoke("import", str(site / "bad.csv"), "--data", str(site))
    assert res.exit_code == 2 and "needs the columns" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    (site / "bad.json").write_text('[{"data": {"image": "x.png"}}]')
    res = invoke("import", str(site / "bad.json"), "--data", str(site))
    assert res.exit_code == 2 and "not a task that label suggest wrote" in res.stderr
    res = invoke("audit", "--labeled", "s3://poses/labeled")
    assert res.exit_code == 2 and "only a local folder" in res.stderr


def test_suggest_import_twice_and_materialise_on_a_local_output(site: Path):
    res = invoke("suggest", "--data", str(site), "--n", "6", "--to", str(site / "sheet"),
                 "--json")
    assert res.exit_code == 0, res.output
    got = last_json(res)
    assert got["ok"] and got["picked"] == 6 and got["used"] == "typical"
    assert "reading frames: 4/4" in res.stderr                        # progress
    fill_csv(got["csv"])
    first = invoke("import", got["csv"], "--data", str(site), "--materialise", "--json")
    assert first.exit_code == 0, first.output
    one = last_json(first)
    assert (one["matched_frames"], one["recorded"]) == (6, True)
    assert one["materialised"]["written"] == 6
    assert len(list((site / "labeled").glob("*/feedback/*/*.npy"))) == 6
    again = last_json(invoke("import", got["csv"], "--data", str(site), "--json"))
    assert (again["matched_frames"], again["recorded"]) == (6, False)
    nxt = last_json(invoke("suggest", "--data", str(site), "--n", "50", "--to",
                           str(site / "sheet2"), "--json"))
    assert nxt["already_labeled"] == 6 and nxt["picked"] == 10
    (site / "other.csv").write_text("source_path,frame_index,content_sha256,label\n"
                                    f"x/y.npy,0,abc,{NAMES[0]}\n")
    res = invoke("import", str(site / "other.csv"), "--data", str(site))
    assert res.exit_code == 2 and "x/y.npy" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_audit_reports_suspects_with_pictures(small_data: Path, tmp_path: Path):
    labeled = tmp_path / "labeled"
    for cls in NAMES[:4]:
        shutil.copytree(small_data / "labeled" / cls, labeled / cls)
    wrong = next((labeled / NAMES[0]).rglob("*.npy"))
    shutil.move(wrong, labeled / NAMES[1] / wrong.name)
    res = invoke("audit", "--labeled", str(labeled), "--method", "logreg",
                 "--to", str(tmp_path / "audit"), "--json")
    assert res.exit_code == 0, res.output
    got = last_json(res)
    assert got["files"] == len(list(labeled.rglob("*.npy"))) == 48
    assert got["method"] == "logreg" and got["flagged"] == len(got["suspects"])
    assert f"{NAMES[1]}/{wrong.name}" in [x["path"] for x in got["suspects"]]
    assert len(list((tmp_path / "audit" / "images").glob("*.png"))) == got["flagged"]


def test_suggest_and_import_on_an_output_in_object_storage(site: Path, s3_bucket: str):
    upload_tree(site / "incoming", f"s3://{s3_bucket}/in")
    upload_tree(site / "output", f"s3://{s3_bucket}/out")
    loc = ["--data", str(site), "--input", f"s3://{s3_bucket}/in", "--output",
           f"s3://{s3_bucket}/out"]
    res = invoke("suggest", *loc, "--n", "5", "--to", str(site / "sheet"), "--json")
    assert res.exit_code == 0, res.output
    got = last_json(res)
    assert got["picked"] == 5 and got["pool_files"]["found"] == 4
    fill_csv(got["csv"])
    res = invoke("import", got["csv"], *loc, "--json")
    assert res.exit_code == 0, res.output
    assert last_json(res)["matched_frames"] == 5
    nxt = last_json(invoke("suggest", *loc, "--n", "50", "--to", str(site / "s2"), "--json"))
    assert nxt["already_labeled"] == 5
