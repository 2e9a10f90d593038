"""Suite-wide fixtures: one Prefect test server for the whole session, and generated data.

Prefect's home and the ephemeral server's database live in a temporary directory; telemetry
is off. Data comes from the project's own generator, never from files outside the repo.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="posebatch-tests-")


def pytest_configure(config: pytest.Config) -> None:
    # Before anything imports prefect: isolate its home and keep telemetry off.
    os.environ["PREFECT_HOME"] = os.path.join(_HOME, "prefect")
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("POSEBATCH_DATA_ROOT", None)
    # Tests train tiny models on tiny folders: no step floor and no synthetic source unless
    # a test asks for them (tests/flows/test_retrain_sources.py does, at toy sizes).
    os.environ["POSEBATCH_MIN_TRAIN_STEPS"] = "0"
    os.environ["POSEBATCH_TRANSFER_BELOW"] = "0"
    os.environ["POSEBATCH_ADAPT_ROUND_STEPS"] = "4"
    # The label audit's k-fold gradient boosting costs seconds a retrain: on only where a
    # test asks (--exclude-suspect, tests/flows/test_retrain_audit.py).
    os.environ["POSEBATCH_LABEL_AUDIT"] = "0"


@pytest.fixture(scope="session")
def prefect_server():
    """A real (ephemeral) Prefect API for the whole session; request it in flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated data root: labeled/ (all classes), incoming/ (3 batches) and labels."""
    from tasks.synth.generate import generate_dataset

    out = tmp_path_factory.mktemp("small_data")
    generate_dataset(out, per_class=12, seed=7, incoming_batches=3, incoming_per_batch=20)
    return out


@pytest.fixture(scope="session")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose production model is a tiny untrained CNN (classification tests)."""
    from tests.support.classify_support import shared_registry

    return shared_registry(tmp_path_factory)


@pytest.fixture(scope="session")
def onnx_registry_dir(registry_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``registry_dir``'s model with a verified model.onnx: for the tests that start many
    ``posebatch`` processes, which then run on ONNX without importing TensorFlow."""
    from tests.support.classify_support import with_onnx

    return with_onnx(registry_dir, tmp_path_factory.mktemp("onnx_registry") / "registry")


@pytest.fixture(scope="session")
def s3_endpoint():
    """One moto S3 server on loopback for the whole session (see tests/support/s3.py)."""
    from tests.support.s3 import start_server

    yield from start_server()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the session's S3 server, the environment pointed at it."""
    from tests.support.s3 import new_bucket

    return new_bucket(s3_endpoint, monkeypatch)
