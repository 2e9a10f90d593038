"""``posebatch models list|show|promote|rollback|history|import`` through the real CLI app
(typer's CliRunner) on a real registry of saved Keras models; no Prefect needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from models.calibration import softmax
from models.onnx_artifact import onnx_info
from models.registry import Registry, load_model
from models.spec import class_names
from tasks.synth.generate import synth_frames
from tests.support.models import reference_h5, tiny_cnn

runner = CliRunner()


def run(*args: str) -> tuple[int, dict, str]:
    """(exit code, the JSON object of the last stdout line, stderr)."""
    res = runner.invoke(app, ["models", *args, "--json"])
    lines = res.stdout.strip().splitlines()
    return res.exit_code, json.loads(lines[-1]) if lines else {}, res.stderr


@pytest.fixture()
def registry(tmp_path: Path) -> Path:
    """Three registered versions with different test scores, none promoted."""
    reg = Registry(tmp_path / "registry")
    model = tiny_cnn()
    for f1 in (0.5, 0.6, 0.7):
        reg.register(model, {"class_names": class_names(), "temperature": 1.2,
                             "metrics": {"test": {"macro_f1": f1, "accuracy": f1 + 0.1}}},
                     report=f"# report of the f1={f1} model\n")
    return reg.root


def test_list_promote_show_rollback_history(registry: Path) -> None:
    reg = ["--registry", str(registry)]
    code, out, _ = run("list", *reg)
    assert code == 0 and out["production"] is None
    assert [v["version"] for v in out["versions"]] == ["v0001", "v0002", "v0003"]
    assert not any(v["production"] for v in out["versions"])
    assert [v["macro_f1"] for v in out["versions"]] == [0.5, 0.6, 0.7]
    for v in out["versions"]:
        assert Path(v["path"]).is_dir() and Path(v["model_path"]).is_file()

    code, out, stderr = run("show", *reg)  # no production yet: one-line error
    assert code == 2 and not out["ok"] and "no production model" in out["error"]
    assert stderr.strip().startswith("error:") and len(stderr.strip().splitlines()) == 1

    for v in ("v0001", "v0003"):
        code, out, _ = run("promote", v, "--reason", f"test {v}", *reg)
        assert code == 0 and out["to"] == v
    code, out, _ = run("list", *reg)
    assert out["production"] == "v0003"
    assert [v["production"] for v in out["versions"]] == [False, False, True]

    code, out, _ = run("show", "production", *reg)
    assert code == 0 and out["version"] == "v0003" and out["production"]
    assert out["metadata"]["metrics"]["test"]["macro_f1"] == 0.7
    assert Path(out["report_path"]).read_text().startswith("# report of the f1=0.7")

    code, out, _ = run("rollback", "--reason", "regression seen", *reg)
    assert code == 0 and (out["from"], out["to"]) == ("v0003", "v0001")
    code, out, _ = run("rollback", *reg)  # v0001 was the first production: nowhere to go
    assert code == 2 and "nothing to roll back" in out["error"]
    code, out, _ = run("rollback", "--to", "v0002", *reg)
    assert code == 0 and out["production"] == "v0002"
    code, out, _ = run("promote", "v0009", *reg)
    assert code == 2 and "no model version 'v0009'" in out["error"]

    code, out, _ = run("history", *reg)
    assert [(h["action"], h["from"], h["to"]) for h in out["history"]] == [
        ("promote", None, "v0001"), ("promote", "v0001", "v0003"),
        ("rollback", "v0003", "v0001"), ("rollback", "v0001", "v0002")]
    assert out["history"][2]["why"] == "regression seen"


def test_import_reference_h5_then_use_it(tmp_path: Path) -> None:
    path, original = reference_h5(tmp_path / "trained_model.h5")
    reg = ["--registry", str(tmp_path / "registry")]
    code, out, _ = run("import", str(path), *reg)
    assert code == 0 and out["promoted"] and out["production"] == out["version"]  # first one
    assert out["input_adapter"] == "singleton_axis_squeezed" and out["output"] == "logits"
    assert out["onnx"] == "verified", out          # checked on generated frames at import

    model = load_model(Registry(tmp_path / "registry").resolve())
    frames = synth_frames(class_names()[:4], seed=1)
    np.testing.assert_allclose(softmax(np.asarray(model(frames))),
                               np.asarray(original(frames)), atol=1e-5)

    # A second import is registered but does not replace production unless asked.
    code, out, _ = run("import", str(path), *reg)
    assert code == 0 and not out["promoted"] and out["production"] == "v0001"
    code, out, _ = run("list", *reg)
    assert [(v["source"], v["production"]) for v in out["versions"]] == [
        ("import", True), ("import", False)]

    code, out, _ = run("import", str(path), "--classes", "a,b,c", *reg)
    assert code == 2 and "17 outputs but 3 class names" in out["error"]
    (tmp_path / "junk.h5").write_bytes(b"not a model")
    code, out, _ = run("import", str(tmp_path / "junk.h5"), *reg)
    assert code == 2 and out["error"].startswith("cannot load junk.h5")


def test_export_onnx_migrates_every_version_once(registry: Path) -> None:
    """The one-command migration: each version gets a verified model.onnx; a second run
    keeps them; --force redoes one; an unknown version is refused in one line."""
    reg = ["--registry", str(registry)]
    code, out, err = run("export-onnx", *reg)
    assert code == 0 and out["refused"] == 0, out
    assert [(v["version"], v["status"]) for v in out["versions"]] == [
        ("v0001", "verified"), ("v0002", "verified"), ("v0003", "verified")]
    assert "[3/3] v0003" in err                      # progress, one line a version
    entry = Registry(registry).get("v0002")
    record = onnx_info(entry)                        # onnx.json: metadata is written once
    assert record["check"]["checked_on"].startswith("synthetic") and "onnx" not in entry.metadata
    assert (entry.path / "model.onnx").is_file()
    code, out, _ = run("export-onnx", *reg)
    assert {v["status"] for v in out["versions"]} == {"kept"}
    code, out, _ = run("export-onnx", "--version", "v0002", "--force", *reg)
    assert [(v["version"], v["status"]) for v in out["versions"]] == [("v0002", "verified")]
    code, out, _ = run("list", *reg)
    assert {v["onnx"] for v in out["versions"]} == {"verified"}
    code, out, _ = run("export-onnx", "--version", "v0009", *reg)
    assert code == 2 and "no model version 'v0009'" in out["error"]
