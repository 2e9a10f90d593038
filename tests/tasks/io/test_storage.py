"""Locations: local folders and s3:// prefixes behind one interface, tested against a real
S3-compatible server (moto in server mode on 127.0.0.1, started here; no network)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from models.spec import class_names
from tasks.io.storage import Location, arrow_filesystem, fsspec_filesystem, is_remote, s3_options
from tasks.io.validate import Rejected, read_heatmaps
from tasks.synth.generate import synth_frames
from tests.support.ops import moto_s3


def _npy_bytes(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, frames, allow_pickle=False)
    return buf.getvalue()


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on loopback with dummy credentials in the environment, bucket poses."""
    with moto_s3("poses") as endpoint:
        yield endpoint


def test_s3_options_take_the_specific_variable_first():
    env = {"AWS_ENDPOINT_URL": "http://generic:1", "AWS_ENDPOINT_URL_S3": "http://s3only:2",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s"}
    opts = s3_options(env)
    assert opts == {"endpoint_url": "http://s3only:2", "region": "eu-west-1",
                    "access_key": "k", "secret_key": "s"}
    assert s3_options({}) == {}


def test_location_kinds_and_bad_uris(tmp_path: Path):
    assert is_remote("s3://bucket/x") and not is_remote(tmp_path) and not is_remote("file:///x")
    fs, root = arrow_filesystem(f"file://{tmp_path}")
    assert root == tmp_path.resolve().as_posix()
    with pytest.raises(ValueError, match="no bucket"):
        arrow_filesystem("s3:///prefix")
    with pytest.raises(ValueError, match="unsupported location"):
        arrow_filesystem("gopher://host/x")


def test_local_location_lists_reads_and_writes_atomically(tmp_path: Path):
    frames = synth_frames(["action_up", "category_looks"], seed=1)
    loc = Location(tmp_path / "in")
    assert loc.list_files() == [] and not loc.exists()
    loc.write_bytes("batch_1/b.npy", _npy_bytes(frames[:1]))
    loc.write_bytes("batch_1/a.npy", _npy_bytes(frames[1:]))
    loc.write_bytes("batch_1/_SUCCESS", b"")
    files = loc.list_files()
    assert [f.path for f in files] == ["batch_1/_SUCCESS", "batch_1/a.npy", "batch_1/b.npy"]
    assert [f.path for f in loc.list_files(".npy")] == ["batch_1/a.npy", "batch_1/b.npy"]
    assert files[1].size == (tmp_path / "in/batch_1/a.npy").stat().st_size
    assert abs(files[1].mtime - (tmp_path / "in/batch_1/a.npy").stat().st_mtime) < 1.0
    # No temporary files left beside the targets.
    assert sorted(p.name for p in (tmp_path / "in/batch_1").iterdir()) == \
        ["_SUCCESS", "a.npy", "b.npy"]
    with loc.open_input("batch_1/b.npy") as fh:
        got = read_heatmaps(fh, files[2].size)
    np.testing.assert_array_equal(got.frames, frames[:1])
    loc.delete("batch_1/_SUCCESS")
    loc.delete("batch_1/_SUCCESS")  # missing is fine by default
    with pytest.raises(FileNotFoundError):
        loc.delete("batch_1/_SUCCESS", missing_ok=False)
    assert loc.free_bytes() > 0


def test_s3_location_round_trip(s3_server: str):
    frames = synth_frames(class_names()[:3], seed=2)
    loc = Location("s3://poses/site-a/incoming")
    assert loc.is_remote and loc.root == "poses/site-a/incoming"
    assert loc.list_files() == []
    for i in range(3):
        loc.write_bytes(f"batch_0/f{i}.npy", _npy_bytes(frames[i:i + 1]))
    loc.write_bytes("batch_0/_SUCCESS", b"")
    loc.write_bytes("batch_0/junk.npy", b"not a heatmap")

    files = loc.list_files(".npy")
    assert [f.path for f in files] == ["batch_0/f0.npy", "batch_0/f1.npy", "batch_0/f2.npy",
                                       "batch_0/junk.npy"]
    assert all(f.mtime > 0 for f in files)
    assert loc.exists("batch_0/_SUCCESS") and not loc.exists("batch_0/_MISSING")
    for i, info in enumerate(files[:3]):
        with loc.open_input(info.path) as fh:
            got = read_heatmaps(fh, info.size)
        np.testing.assert_array_equal(got.frames, frames[i:i + 1])
    with loc.open_input("batch_0/junk.npy") as fh, pytest.raises(Rejected) as err:
        read_heatmaps(fh, files[3].size)
    assert err.value.reason == "not_npy"
    assert loc.uri_of("batch_0/f0.npy") == "s3://poses/site-a/incoming/batch_0/f0.npy"
    assert loc.free_bytes() is None

    # The fsspec view sees the same objects (for libraries that take fsspec).
    fs, root = fsspec_filesystem("s3://poses/site-a/incoming")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(root)) == \
        ["_SUCCESS", "f0.npy", "f1.npy", "f2.npy", "junk.npy"]

    loc.delete("batch_0/junk.npy")
    assert not loc.exists("batch_0/junk.npy")


def test_s3_parquet_dataset_through_pyarrow(s3_server: str):
    out = Location("s3://poses/site-a/output")
    table = pa.table({"source_path": ["a.npy", "b.npy", "c.npy"],
                      "confidence": pa.array([0.9, 0.8, 0.7], pa.float32()),
                      "date": ["2024-05-01", "2024-05-01", "2024-05-02"]})
    ds.write_dataset(table, out.path("predictions"), filesystem=out.fs, format="parquet",
                     partitioning=["date"], partitioning_flavor="hive",
                     basename_template="part-{i}.parquet",
                     existing_data_behavior="overwrite_or_ignore")
    names = [f.path for f in out.list_files(".parquet")]
    assert names == ["predictions/date=2024-05-01/part-0.parquet",
                     "predictions/date=2024-05-02/part-0.parquet"]
    back = ds.dataset(out.path("predictions"), filesystem=out.fs, format="parquet",
                      partitioning="hive").to_table().sort_by("source_path")
    assert back.column("source_path").to_pylist() == ["a.npy", "b.npy", "c.npy"]
    assert back.column("date").to_pylist() == ["2024-05-01", "2024-05-01", "2024-05-02"]


def test_relative_inside_names_only_folders_strictly_inside(tmp_path: Path) -> None:
    from tasks.io.storage import relative_inside

    inp = tmp_path / "in"
    assert relative_inside(str(inp / "out" / "x"), str(inp)) == "out/x"
    assert relative_inside(str(inp), str(inp)) is None          # the input itself
    assert relative_inside(str(tmp_path / "elsewhere"), str(inp)) is None
    assert relative_inside(None, str(inp)) is None
    assert relative_inside("s3://b/in/out", "s3://b/in") is None
