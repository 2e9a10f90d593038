"""``posebatch ledger show|verify|forget`` on an output committed through the real commit
path: what a file's entry says, one line per broken part, forgetting removes rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
from typer.testing import CliRunner

from flows.cli import app
from tasks.classify.ledger import Ledger
from tests.tasks.classify.test_verify import commit


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_ledger_show_verify_and_forget(tmp_path: Path):
    data = tmp_path / "data"
    out = data / "output"
    led = Ledger.load(str(out))
    first = commit(led, {"b/1.npy": b"one", "b/2.npy": b"two", "b/bad.npy": None}, "c1",
                   {"b/1.npy": 3})
    second = commit(led, {"c/3.npy": b"three"}, "c2")
    for group in ([], ["show"], ["verify"], ["forget"]):
        assert cli("ledger", *group, "--help")[0] == 0

    code, stdout, _ = cli("ledger", "verify", "--data", str(data), "--json")
    assert code == 0 and last_json(stdout)["ok"] is True
    code, stdout, _ = cli("ledger", "show", "b/1.npy", "--data", str(data), "--json")
    (row,) = last_json(stdout)["entries"]
    assert row["status"] == "classified" and row["frames"] == 3
    assert row["part"] == first.parts[0].final and row["part_exists"] is True
    assert (row["model_version"], row["flow_run_id"], row["commit_id"]) == ("v0001", "run-1",
                                                                           "c1")
    assert row["committed_at"] == first.created_at
    code, stdout, _ = cli("ledger", "show", "b", "--data", str(data))      # a batch
    assert code == 0 and len(stdout.strip().splitlines()) == 3
    code, _, stderr = cli("ledger", "show", "nope.npy", "--data", str(data))
    assert code == 2 and stderr.startswith("error: no ledger entry")

    code, stdout, _ = cli("ledger", "forget", "b/1.npy", "--data", str(data), "--json")
    res = last_json(stdout)
    assert code == 0 and (res["files"], res["rows_removed"]) == (1, 3)
    preds = ds.dataset(out / "predictions", partitioning="hive").to_table()
    assert sorted(preds["source_path"].to_pylist()) == ["b/2.npy", "c/3.npy"]
    assert "b/1.npy" not in Ledger.load(str(out)).entries["path"].to_pylist()
    assert cli("ledger", "verify", "--data", str(data))[0] == 0
    code, _, stderr = cli("ledger", "forget", "--data", str(data))
    assert code == 2 and "PATH_OR_GLOB or --batch" in stderr
    code, stdout, _ = cli("ledger", "forget", "--batch", "c", "--data", str(data), "--json")
    assert code == 0 and last_json(stdout)["files"] == 1

    # A lost part: verify exits 1 with one line per problem.
    (out / first.parts[1].final).unlink()                          # the rejections part
    code, stdout, _ = cli("ledger", "verify", "--data", str(data))
    assert code == 1
    assert stdout.strip().splitlines() == [
        f"missing part {first.parts[1].final}: 1 row(s) of 1 file(s) the ledger records "
        "there are gone"]
    assert second.parts[0].final not in stdout
