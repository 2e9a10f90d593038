"""Object storage: the classification flow reads its input from and writes its Parquet
outputs and ledger to ``s3://`` locations on a local S3-compatible server (moto on
127.0.0.1, started here; no network), on threads and on a Dask worker process, exactly once,
with the same rows as a run on local folders."""

from __future__ import annotations

import pytest

from tests.support.ops import (
    assert_same_rows,
    make_batches,
    moto_s3,
    register_tiny_model,
    remote_rows,
    table_rows,
    upload_tree,
)


@pytest.fixture(scope="module")
def s3_site(tmp_path_factory: pytest.TempPathFactory, prefect_server):
    """Generated batches on S3 (and the same locally), a tiny local model registry."""
    root = tmp_path_factory.mktemp("s3_site")
    inp = make_batches(root, batches=2, per_batch=6, seed=41)
    register_tiny_model(root / "registry")
    with pytest.MonkeyPatch.context() as mp, moto_s3("poses") as endpoint:
        mp.setenv("POSEBATCH_XLA", "0")
        uploaded = upload_tree(inp, "s3://poses/incoming")
        yield {"root": root, "input": inp, "registry": root / "registry",
               "uploaded": uploaded, "endpoint": endpoint}


def _classify(site, input_dir: str, output_dir: str, spec=None) -> dict:
    from flows.classify import classify_flow
    from flows.runtime.runners import with_task_runner

    return with_task_runner(classify_flow, spec)(
        input_dir=input_dir, output_dir=output_dir, registry_dir=str(site["registry"]),
        batch_size=8, chunk_files=5, quiet_seconds=0)


def test_classify_from_s3_to_s3_exactly_once(s3_site):
    from tasks.classify.ledger import Ledger
    from tasks.io.storage import Location

    npy = sorted(p for p in s3_site["uploaded"] if p.endswith(".npy"))
    assert len(npy) == 12 and "batch_000/_SUCCESS" in s3_site["uploaded"]
    first = _classify(s3_site, "s3://poses/incoming", "s3://poses/out")
    assert first["classified"] == 12 and first["rejected"] == 0

    rows = remote_rows("s3://poses/out")
    assert sorted({r["source_path"] for r in rows}) == npy
    assert {r["model_version"] for r in rows} == {"v0001"}
    out = Location("s3://poses/out")
    parts = [f.path for f in out.list_files(".parquet") if f.path.startswith("predictions/")]
    assert parts and all(p.startswith("predictions/date=") for p in parts), parts
    assert len(Ledger.load("s3://poses/out").entries) == 12

    again = _classify(s3_site, "s3://poses/incoming", "s3://poses/out")
    assert again["new"] == 0 and again["already_processed"] == 12
    assert len(remote_rows("s3://poses/out")) == len(rows)          # nothing twice

    local = s3_site["root"] / "out_local"
    _classify(s3_site, str(s3_site["input"]), str(local))
    assert_same_rows(table_rows(local), rows)                      # same as local folders


@pytest.mark.slow
def test_dask_worker_reads_and_classifies_s3_input(s3_site):
    """A worker process sees the bucket through the same environment (endpoint, credentials)
    as it would on another machine; results go through the same ledger commit."""
    from flows.runtime.runners import runner_spec

    summary = _classify(s3_site, "s3://poses/incoming", "s3://poses/out_dask",
                        runner_spec(workers=1))
    assert summary["classified"] == 12
    local = s3_site["root"] / "out_local_dask"
    _classify(s3_site, str(s3_site["input"]), str(local))
    assert_same_rows(table_rows(local), remote_rows("s3://poses/out_dask"))
