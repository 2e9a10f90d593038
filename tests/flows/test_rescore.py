"""The re-scoring flow on a real Prefect API: a classified history scored again by a second
model version, exactly once; the archive; missing inputs; --dry-run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from models.registry import Registry
from tasks.classify.ledger import Ledger
from tasks.classify.verify import verify
from tests.support.classify_support import make_input
from tests.support.rescore_support import rows_by_version, two_versions


def classify(inp: Path, out: Path, registry: Path, **kw):
    from flows.classify import classify_flow

    return classify_flow(input_dir=str(inp), output_dir=str(out), registry_dir=str(registry),
                         batch_size=4, quiet_seconds=0, **kw)


def rescore(inp: Path, out: Path, registry: Path, **kw):
    from flows.rescore import rescore_flow

    return rescore_flow(input_dir=str(inp), output_dir=str(out), registry_dir=str(registry),
                        batch_size=4, **kw)


@pytest.fixture()
def history(prefect_server, registry_dir: Path, tmp_path: Path):
    """12 files classified by production (v0001); v0002 registered, not promoted."""
    reg, old, new = two_versions(registry_dir, tmp_path / "registry")
    inp = make_input(tmp_path / "data", batches=2, per_batch=6)
    out = tmp_path / "out"
    classify(inp, out, reg)
    return inp, out, reg, old, new


def test_rescore_adds_one_row_per_frame_for_the_new_version_and_keeps_the_old_rows(history):
    inp, out, reg, old, new = history
    before = rows_by_version(out)
    first = rescore(inp, out, reg, model_version=new)
    after = rows_by_version(out)
    assert first["ok"] and first["rescored_files"] == 12 and first["frames"] == 12
    assert first["engine"] in ("keras", "onnx") and first["engine_reason"]  # named, and why
    assert after[old] == before[old]                 # old rows kept, untouched
    assert after[new] == before[old]                 # every frame once for the new version
    again = rescore(inp, out, reg, model_version=new)
    assert (again["selected_files"], again["already_scored"], again["frames"]) == (0, 12, 0)
    assert rows_by_version(out) == after             # exactly once per content and version
    assert verify(Ledger.load(str(out))).problems == []
    lineage = ds.dataset(out / "predictions", partitioning="hive").to_table(
        columns=["model_version", "run_kind", "model_sha256", "temperature",
                 "posebatch_version"]).to_pylist()
    entry = Registry(reg).get(new)
    mine = [r for r in lineage if r["model_version"] == new]
    assert {r["run_kind"] for r in mine} == {"rescore"}
    assert {r["model_sha256"] for r in mine} == {entry.model_sha256()}
    assert [r["temperature"] for r in mine] == pytest.approx([entry.temperature] * len(mine))
    assert {r["run_kind"] for r in lineage if r["model_version"] == old} == {"classify"}
    assert all(r["posebatch_version"] for r in lineage)


def test_inputs_are_found_in_the_archive_and_missing_ones_are_named_not_guessed(
        prefect_server, registry_dir: Path, tmp_path: Path):
    reg, _, new = two_versions(registry_dir, tmp_path / "registry")
    inp = make_input(tmp_path / "data", batches=1, per_batch=6)
    out, arc = tmp_path / "out", tmp_path / "archive"
    classify(inp, out, reg, move_processed=str(arc))     # the inputs leave for the archive
    assert not list(inp.rglob("*.npy"))
    gone = sorted(arc.rglob("*.npy"))[0]
    gone.unlink()
    plan = rescore(inp, out, reg, model_version=new, dry_run=True)
    assert (plan["selected_files"], plan["found_files"], plan["in_archive"],
            plan["missing"]) == (6, 5, 5, 1)
    assert plan["missing_files"] == [gone.relative_to(arc).as_posix()]
    assert new not in rows_by_version(out)               # a dry run writes nothing
    done = rescore(inp, out, reg, model_version=new)
    assert done["ok"] and done["rescored_files"] == 5 and done["missing"] == 1
    assert len(rows_by_version(out)[new]) == 5


def test_filters_select_by_batch_day_and_label_and_a_run_with_nothing_found_fails(history):
    inp, out, reg, _, new = history
    from tasks.classify.ledger import OutputLock

    with OutputLock(str(out)):  # a dry run only reads: a classify holding the lock is fine
        assert rescore(inp, out, reg, model_version=new, batch="batch_000",
                       dry_run=True)["selected_files"] == 6
    assert rescore(inp, out, reg, model_version=new, since="2999-01-01",
                   dry_run=True)["selected_files"] == 0
    table = ds.dataset(out / "predictions", partitioning="hive").to_table()
    label = table["label"][0].as_py()
    with_label = {p for p, lab in zip(table["source_path"].to_pylist(),
                                      table["label"].to_pylist(), strict=True) if lab == label}
    assert rescore(inp, out, reg, model_version=new, label=[label],
                   dry_run=True)["selected_files"] == len(with_label)
    assert rescore(inp, out, reg, model_version=new, max_confidence=0.0,
                   dry_run=True)["selected_files"] == 0
    shutil.rmtree(inp)                                   # every input gone
    plan = rescore(inp, out, reg, model_version=new, dry_run=True)   # says so, no failure
    assert (plan["ok"], plan["missing"], len(plan["missing_files"])) == (True, 12, 12)
    with pytest.raises(RuntimeError, match="none of the 12 file"):
        rescore(inp, out, reg, model_version=new)
