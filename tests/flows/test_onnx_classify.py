"""Classification on the ONNX engine: no TensorFlow in the process (a fresh CLI process,
the flow, its threads) nor in the Dask workers, predictions equal to the Keras path, and
the Keras fallback for a version without a verified model.onnx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.registry import Registry
from tests.support.ops import (
    assert_same_rows,
    make_batches,
    modules_loaded,
    register_tiny_model,
    table_rows,
)

CHUNK = 4
CONFIDENCE_ATOL = 1e-4  # the bar: same labels, confidences within 1e-4

# Runs the CLI in this fresh interpreter, then says which heavy modules it ever imported.
CLI_THEN_MODULES = """
import json, sys
from flows.cli import main
sys.argv = ["posebatch", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, **{m: m in sys.modules
                                   for m in ("tensorflow", "keras", "onnxruntime")}}))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, prefect_server) -> dict[str, Path]:
    """Batches, v0001 with a verified model.onnx (the migration made it), v0002 without one,
    and the Keras engine's output for v0001 to compare against."""
    from tasks.train.inference_artifact import export_version

    root = tmp_path_factory.mktemp("onnx_site")
    inp = make_batches(root, batches=2, per_batch=7, seed=41)
    reg = root / "registry"
    register_tiny_model(reg)
    assert export_version(Registry(reg), "v0001")["status"] == "verified"
    from flows.classify import classify_flow

    summary = classify_flow(input_dir=str(inp), output_dir=str(root / "out_keras"),
                            registry_dir=str(reg), batch_size=8, chunk_files=CHUNK,
                            quiet_seconds=0, engine="keras")
    assert summary["classified"] == 14 and summary["engine"] == "keras"
    return {"root": root, "input": inp, "registry": reg, "keras": root / "out_keras"}


@pytest.mark.slow
def test_a_cli_run_on_onnx_never_imports_tensorflow(site: dict[str, Path]):
    from prefect.settings import PREFECT_API_URL

    out = site["root"] / "out_cli"
    # the session's Prefect API: no server start-up in the child (Prefect is not the subject)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    res = subprocess.run(
        [sys.executable, "-c", CLI_THEN_MODULES, "classify", "--input", str(site["input"]),
         "--output", str(out), "--registry", str(site["registry"]), "--batch-size", "8",
         "--chunk-files", str(CHUNK), "--quiet-seconds", "0", "--data", str(site["root"]),
         "--json"], env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])
    lines = res.stdout.strip().splitlines()
    modules = json.loads(lines[-1])
    assert modules["exit"] in (0, None), res.stderr[-3000:]
    summary = json.loads(lines[-2])
    assert summary["classified"] == 14 and summary["engine"] == "onnx"
    assert summary["engine_reason"] == "verified ONNX file"       # auto, the default
    assert modules == {"exit": modules["exit"], "tensorflow": False, "keras": False,
                       "onnxruntime": True}
    assert_same_rows(table_rows(site["keras"]), table_rows(out), atol=CONFIDENCE_ATOL)


def test_a_version_without_a_verified_file_falls_back_to_keras(site: dict[str, Path]):
    from flows.classify import classify_flow

    register_tiny_model(site["registry"])                  # v0002, now production, no ONNX
    try:
        summary = classify_flow(input_dir=str(site["input"]),
                                output_dir=str(site["root"] / "out_fallback"),
                                registry_dir=str(site["registry"]), batch_size=8,
                                chunk_files=CHUNK, quiet_seconds=0)
        assert summary["engine"] == "keras" and summary["classified"] == 14
        assert summary["engine_reason"].startswith("fallback: no ONNX file recorded")
        with pytest.raises(ValueError, match="v0002 cannot run on onnx"):
            classify_flow(input_dir=str(site["input"]),
                          output_dir=str(site["root"] / "out_refused"),
                          registry_dir=str(site["registry"]), quiet_seconds=0,
                          engine="onnx")
    finally:
        Registry(site["registry"]).set_production("v0001", "back to the ONNX version")


@pytest.mark.slow
def test_dask_workers_run_onnx_without_tensorflow(site: dict[str, Path]):
    from distributed import Client, LocalCluster

    from flows.classify import classify_flow
    from flows.runtime.runners import local_cluster_kwargs, runner_spec, with_task_runner

    out = site["root"] / "out_dask"
    with LocalCluster(**local_cluster_kwargs(2)) as cluster, Client(cluster) as client:
        flow = with_task_runner(classify_flow,
                                runner_spec(dask_address=cluster.scheduler_address))
        summary = flow(input_dir=str(site["input"]), output_dir=str(out),
                       registry_dir=str(site["registry"]), model_version="v0001",
                       batch_size=8, chunk_files=CHUNK, quiet_seconds=0, engine="onnx")
        loaded = client.run(modules_loaded)
    assert summary["classified"] == 14 and summary["engine"] == "onnx"
    assert len(loaded) == 2
    assert all(m == {"tensorflow": False, "keras": False, "onnxruntime": True}
               for m in loaded.values()), loaded
    assert_same_rows(table_rows(site["keras"]), table_rows(out), atol=CONFIDENCE_ATOL)
