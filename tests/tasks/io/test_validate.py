"""The validator (tasks/io/validate.py): every rejection reason, and what it accepts and converts.

Hostile files are built byte by byte where ``np.save`` would refuse to make them (huge frame
counts, lying headers), and a pickle bomb proves that object arrays are never unpickled.
"""

from __future__ import annotations

import io
import pathlib
import tracemalloc

import numpy as np
import pytest

from models.spec import HEATMAP_SHAPE
from tasks.io.validate import REASONS, Rejected, read_heatmap_file, read_heatmaps
from tasks.synth.generate import synth_frames


def _reject(path, reason: str, **kw) -> Rejected:
    with pytest.raises(Rejected) as info:
        read_heatmap_file(path, **kw)
    assert info.value.reason == reason, info.value
    assert info.value.detail
    return info.value


def _save(tmp_path: pathlib.Path, name: str, arr: np.ndarray, **kw) -> pathlib.Path:
    path = tmp_path / name
    np.save(path, arr, **kw)
    return path


def _raw_npy(shape: tuple[int, ...], descr: str = "<f4", fortran: bool = False,
             data: bytes = b"") -> bytes:
    """A .npy file whose header says ``shape`` followed by ``data`` (whatever its length)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue() + data  # write_array_header_1_0 writes the magic too


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return synth_frames(["action_up", "dummy", "category_sound"], seed=3)


# ------------------------------------------------------------------------ rejections


@pytest.mark.parametrize("content", [b"", b"hello world, not an array\n", b"\x93NUMPY\x01",
                                     b"\x93NUMPY\x09\x00" + b"x" * 200,
                                     b"PK\x03\x04" + b"\x00" * 300])
def test_not_npy(tmp_path, content):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    _reject(path, "not_npy")


def test_npz_archive_is_not_npy(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, a=np.zeros(HEATMAP_SHAPE, np.float32))
    _reject(path, "not_npy")


@pytest.mark.parametrize("dtype", ["int32", "uint8", "complex64", "bool", "<U4"])
def test_bad_dtype(tmp_path, dtype):
    _reject(_save(tmp_path, "x.npy", np.zeros((1, *HEATMAP_SHAPE), dtype)), "bad_dtype")


def test_structured_dtype_rejected(tmp_path):
    arr = np.zeros((1, *HEATMAP_SHAPE), dtype=[("a", "<f4")])
    _reject(_save(tmp_path, "x.npy", arr), "bad_dtype")


class _Bomb:
    """Unpickling this creates a marker file: proof that the validator never unpickles."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_object_array_rejected_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    arr = np.empty((1, *HEATMAP_SHAPE[:1]), dtype=object)
    arr[0, 0] = _Bomb(marker)
    path = _save(tmp_path, "bomb.npy", arr, allow_pickle=True)
    # The bomb works: loading it the unsafe way would run the payload.
    assert b"touch" in path.read_bytes()
    _reject(path, "bad_dtype")
    with open(path, "rb") as fh:
        with pytest.raises(Rejected, match="bad_dtype"):
            read_heatmaps(fh, path.stat().st_size)
    assert not marker.exists()


def test_object_array_with_heatmap_shape_rejected(tmp_path):
    arr = np.zeros((1, *HEATMAP_SHAPE), dtype=object)
    _reject(_save(tmp_path, "x.npy", arr, allow_pickle=True), "bad_dtype")


@pytest.mark.parametrize("shape", [(17, 64, 47), (64, 48), (2, 17, 48, 64), (1, 1, 17, 64, 48),
                                   (17,), (), (0, 17, 64, 48), (1, 16, 64, 48)])
def test_bad_shape(tmp_path, shape):
    _reject(_save(tmp_path, "x.npy", np.zeros(shape, np.float32)), "bad_shape")


def test_too_many_frames_is_not_allocated(tmp_path):
    """A header claiming a billion frames (~200 TB) on a tiny file: rejected from the header."""
    path = tmp_path / "huge.npy"
    path.write_bytes(_raw_npy((10**9, *HEATMAP_SHAPE), data=b"\x00" * 4096))
    tracemalloc.start()
    try:
        _reject(path, "too_many_frames", max_frames=4096)
        # Even when the limit allows it, a lying header is caught by its size, unread.
        _reject(path, "truncated", max_frames=10**12)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_too_many_frames_real_file(tmp_path, frames):
    path = _save(tmp_path, "x.npy", frames)
    _reject(path, "too_many_frames", max_frames=2)
    assert read_heatmap_file(path, max_frames=3).frames.shape == (3, *HEATMAP_SHAPE)


def test_truncated(tmp_path, frames):
    good = _save(tmp_path, "good.npy", frames).read_bytes()
    short = tmp_path / "short.npy"
    short.write_bytes(good[:-100])
    _reject(short, "truncated")
    header_only = tmp_path / "header.npy"
    header_only.write_bytes(good[:128])
    _reject(header_only, "truncated")
    longer = tmp_path / "long.npy"
    longer.write_bytes(good + b"\x00" * 8)
    _reject(longer, "truncated")


def test_stream_shorter_than_announced_size(frames):
    """A remote stream that ends early (size said otherwise) is truncated, not garbage."""
    buf = io.BytesIO()
    np.save(buf, frames)
    data = buf.getvalue()
    with pytest.raises(Rejected) as info:
        read_heatmaps(io.BytesIO(data[:-1000]), size=len(data))
    assert info.value.reason == "truncated"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path, frames, bad):
    arr = frames.copy()
    arr[1, 5, 10, 10] = bad
    _reject(_save(tmp_path, "x.npy", arr), "non_finite")


@pytest.mark.parametrize("bad", [100.0, -5.0, 4.5])
def test_out_of_range(tmp_path, frames, bad):
    arr = frames.copy()
    arr[0, 3, 20, 20] = bad
    _reject(_save(tmp_path, "x.npy", arr), "out_of_range")


def test_heatmap_values_in_range_are_accepted(tmp_path, frames):
    """ViTPose peaks a little above 1 and negative background are normal, not rejected."""
    arr = frames.copy()
    arr[0, 0, 5, 5] = 1.3
    arr[0, 1] -= 0.05
    assert read_heatmap_file(_save(tmp_path, "x.npy", arr)).frames.shape[0] == 3


def test_read_error_missing_file_and_directory(tmp_path):
    _reject(tmp_path / "missing.npy", "read_error")
    folder = tmp_path / "dir.npy"
    folder.mkdir()
    _reject(folder, "read_error")


def test_read_error_from_stream(frames):
    buf = io.BytesIO()
    np.save(buf, frames)
    data = buf.getvalue()

    class Failing(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 0 and n != -1 and n > 1000:
                raise OSError("connection reset")
            return super().read(n)

    with pytest.raises(Rejected) as info:
        read_heatmaps(Failing(data), size=len(data))
    assert info.value.reason == "read_error"


def _heatmap(value: float = 0.5, n: int = 1) -> np.ndarray:
    arr = np.zeros((n, *HEATMAP_SHAPE), np.float32)
    arr[:, :, 30, 20] = value
    return arr


# One minimal file per reason code: a reason added to REASONS without a case fails here.
CASES = {
    "not_npy": lambda p: p.write_bytes(b"certainly not an array"),
    "bad_dtype": lambda p: np.save(p, _heatmap().astype(np.int16)),
    "bad_shape": lambda p: np.save(p, np.zeros((3, 64, 48), np.float32)),
    "too_many_frames": lambda p: np.save(p, _heatmap(n=3)),
    "truncated": lambda p: p.write_bytes(_raw_npy((2, *HEATMAP_SHAPE), data=b"\0" * 64)),
    "non_finite": lambda p: np.save(p, _heatmap(np.nan)),
    "out_of_range": lambda p: np.save(p, _heatmap(50.0)),
    "read_error": lambda p: None,  # never written: the file does not exist
}


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_each_reason_code_has_a_case(tmp_path, reason):
    assert reason in CASES, f"no test case produces {reason!r}"
    path = tmp_path / "case.npy"
    CASES[reason](path)
    _reject(path, reason, max_frames=2)


# ------------------------------------------------------------------------ accepted input


def test_reference_format_and_variants(tmp_path, frames):
    one = read_heatmap_file(_save(tmp_path, "a.npy", frames[:1]))
    assert one.frames.shape == (1, *HEATMAP_SHAPE) and one.frames.dtype == np.float32
    np.testing.assert_array_equal(one.frames, frames[:1])
    bare = read_heatmap_file(_save(tmp_path, "b.npy", frames[0]))
    assert bare.frames.shape == (1, *HEATMAP_SHAPE)
    np.testing.assert_array_equal(bare.frames[0], frames[0])
    batch = read_heatmap_file(_save(tmp_path, "c.npy", frames))
    assert batch.frames.shape == (3, *HEATMAP_SHAPE)
    np.testing.assert_array_equal(batch.frames, frames)
    assert batch.warnings == [[], [], []]


@pytest.mark.parametrize("dtype", ["<f2", "<f8", ">f4", ">f8", ">f2"])
def test_other_float_dtypes_are_converted(tmp_path, frames, dtype):
    got = read_heatmap_file(_save(tmp_path, "x.npy", frames.astype(dtype)))
    assert got.frames.dtype == np.float32 and got.frames.flags.c_contiguous
    tol = 2e-3 if dtype.endswith("2") else 0
    np.testing.assert_allclose(got.frames, frames.astype(dtype).astype(np.float32), atol=tol)
    np.testing.assert_allclose(got.frames, frames, atol=tol)


def test_fortran_order(tmp_path, frames):
    path = _save(tmp_path, "f.npy", np.asfortranarray(frames))
    header = path.read_bytes()[:128]
    assert b"'fortran_order': True" in header
    got = read_heatmap_file(path)
    np.testing.assert_array_equal(got.frames, frames)
    assert got.frames.flags.c_contiguous


def test_npy_version_2_header(tmp_path, frames):
    path = tmp_path / "v2.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, frames, version=(2, 0))
    assert path.read_bytes()[6:8] == b"\x02\x00"
    np.testing.assert_array_equal(read_heatmap_file(path).frames, frames)


def test_stream_interface_matches_file(tmp_path, frames):
    path = _save(tmp_path, "x.npy", frames)
    with open(path, "rb") as fh:
        got = read_heatmaps(fh, path.stat().st_size)
    np.testing.assert_array_equal(got.frames, read_heatmap_file(path).frames)


def test_warnings_all_zero_and_no_peak(tmp_path, frames):
    arr = np.stack([frames[0], np.zeros(HEATMAP_SHAPE, np.float32),
                    np.full(HEATMAP_SHAPE, 0.01, np.float32), -np.abs(frames[1]) * 0.1])
    got = read_heatmap_file(_save(tmp_path, "w.npy", arr))
    assert got.frames.shape == (4, *HEATMAP_SHAPE)
    assert got.warnings == [[], ["all_zero"], ["no_peak"], ["no_peak"]]


def _peak_bytes(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


def _oversized(tmp_path: pathlib.Path) -> pathlib.Path:
    """A one-frame header followed by 64 MB: far past any valid size for max_frames=1."""
    path = tmp_path / "big.npy"
    with open(path, "wb") as fh:
        fh.write(_raw_npy((1, *HEATMAP_SHAPE), data=b""))
        for _ in range(16):
            fh.write(b"\x00" * (4 << 20))
    return path


def test_classify_path_reads_a_growing_or_oversized_file_bounded(tmp_path, monkeypatch):
    """Classification's reader holds at most the limit, even when the file's stat size
    (taken before the read) says it is small: a file that grows in between."""
    import hashlib
    import os

    from tasks.classify.infer import read_input
    from tasks.io.storage import Location

    path = _oversized(tmp_path)
    small = os.stat_result((0o100644, 0, 0, 1, 0, 0, 1000, 0, 0, 0))
    monkeypatch.setattr(os, "fstat", lambda fd: small)  # the size before it grew
    (out, frames), peak = _peak_bytes(lambda: read_input(Location(str(tmp_path)), "big.npy", 1))
    assert frames is None and out.reason == "truncated"
    assert out.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # every byte hashed
    assert peak < 12_000_000  # the file is 64 MB


def test_retrain_scan_reads_an_oversized_file_bounded(tmp_path):
    from tasks.train.dataset import LabeledFile, scan_files

    path = _oversized(tmp_path)
    lf = LabeledFile(path=path, rel="a/big.npy", label=0, group="a")
    (accepted, rejected), peak = _peak_bytes(lambda: scan_files([lf], max_frames=1))
    assert not accepted and rejected[0]["reason"] == "truncated"
    assert peak < 12_000_000


# ------------------------------------------------------------------ the in-memory reader


@pytest.mark.parametrize("variant", ["f4", "f2", ">f8", "fortran", "v2", "bare"])
def test_in_memory_decode_matches_the_stream_reader(frames, variant):
    """``decode_heatmaps`` (the classify path: bytes already in memory, header cached)
    gives what ``read_heatmaps`` gives on a stream, for every accepted layout."""
    from tasks.io.validate import decode_heatmaps

    arr = frames[:1] if variant == "bare" else frames
    arr = arr[0] if variant == "bare" else arr
    buf = io.BytesIO()
    if variant == "v2":
        np.lib.format.write_array(buf, arr, version=(2, 0))
    else:
        dtype = {"f2": "<f2", ">f8": ">f8"}.get(variant, "<f4")
        src = np.asfortranarray(arr) if variant == "fortran" else arr.astype(dtype)
        np.save(buf, src)
    data = buf.getvalue()
    want = read_heatmaps(io.BytesIO(data), len(data))
    for _ in range(2):  # the second time from the header cache
        got = decode_heatmaps(np.frombuffer(data, np.uint8))
        np.testing.assert_array_equal(got.frames, want.frames)
        assert got.warnings == want.warnings


def test_cached_header_still_applies_each_callers_bounds(frames):
    """A header seen before (cached) is still checked against this call's frame bound, and
    a file cut inside its header is still not an array."""
    from tasks.io.validate import decode_heatmaps

    buf = io.BytesIO()
    np.save(buf, frames)
    data = buf.getvalue()
    assert decode_heatmaps(data, max_frames=3).frames.shape[0] == 3
    with pytest.raises(Rejected) as info:
        decode_heatmaps(data, max_frames=2)
    assert info.value.reason == "too_many_frames"
    with pytest.raises(Rejected) as info:
        decode_heatmaps(data[:40])
    assert info.value.reason == "not_npy"
    with pytest.raises(Rejected) as info:
        decode_heatmaps(data[:-4])
    assert info.value.reason == "truncated"


def test_check_values_warnings_equal_frame_warnings(frames):
    """One min/max pass gives the same warnings as the separate checks: all-zero, a frame
    whose only values are negative (no peak), a low peak, and normal frames."""
    from tasks.io.validate import check_values, frame_warnings

    arr = np.concatenate([frames, np.zeros((1, *HEATMAP_SHAPE), np.float32),
                          np.full((1, *HEATMAP_SHAPE), -0.2, np.float32),
                          np.full((1, *HEATMAP_SHAPE), 0.01, np.float32)])
    assert check_values(arr) == frame_warnings(arr)
    assert check_values(arr)[-3:] == [["all_zero"], ["no_peak"], ["no_peak"]]


class _Trickle(io.RawIOBase):
    """A stream that returns a few bytes per read and has no file number (a remote file)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), 1000, len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_read_upto_reads_short_reads_and_stops_at_the_bound():
    from tasks.io.validate import read_upto

    data = bytes(range(256)) * 50
    assert bytes(read_upto(_Trickle(data), 10**9)) == data
    assert bytes(read_upto(_Trickle(data), 3000)) == data[:3000]
    assert bytes(read_upto(io.BytesIO(data), 12_801)) == data
    assert bytes(read_upto(io.BytesIO(b""), 5)) == b""
