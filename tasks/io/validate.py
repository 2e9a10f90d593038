"""The heatmap validator: the one rule for what a readable, sane heatmap file is.

Used by classification and retraining alike. It reads the ``.npy`` header before any data,
never unpickles, and never allocates what a header merely claims: a file is only read after
its declared size matches its real size and its frame count is within bounds.

ViTPose's heatmap head is unbounded: peaks a little above 1 and small negative background
values are normal. Only the absurd is rejected; the merely odd is returned as a warning.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from models.spec import HEATMAP_SHAPE

# Values a heatmap can plausibly hold; beyond these the file is not a heatmap.
VALUE_MIN = -1.0
VALUE_MAX = 4.0
# A frame whose highest value is below this has no usable peak.
NO_PEAK_BELOW = 0.05
HEADER_MAX = 65536 + 16  # the largest header a valid .npy may carry (v2/v3: 4-byte length)
ACCEPTED_DTYPES = (np.dtype("<f4"), np.dtype("<f2"), np.dtype("<f8"),
                   np.dtype(">f4"), np.dtype(">f2"), np.dtype(">f8"))

# Stable reason codes, recorded in the rejections dataset.
REASONS = {
    "not_npy": "not a NumPy .npy file (bad magic or header)",
    "bad_dtype": "dtype is not float16/float32/float64",
    "bad_shape": "shape is not [1,17,64,48], [17,64,48] or [N,17,64,48]",
    "too_many_frames": "frame count exceeds the configured maximum",
    "truncated": "file size does not match its header (truncated or trailing data)",
    "non_finite": "contains NaN or Inf",
    "out_of_range": "values far outside what a heatmap holds",
    "read_error": "the file could not be read",
}


class Rejected(Exception):
    """A file that is not valid input; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Heatmaps:
    """A validated file: float32 frames ``[N,17,64,48]`` and per-frame warnings."""

    frames: np.ndarray
    warnings: list[list[str]] = field(default_factory=list)


def _frame_count(shape: tuple[int, ...], max_frames: int) -> int:
    if tuple(shape) == HEATMAP_SHAPE:
        return 1
    if len(shape) == 4 and tuple(shape[1:]) == HEATMAP_SHAPE:
        if shape[0] < 1:
            raise Rejected("bad_shape", f"shape {list(shape)} holds no frames")
        if shape[0] > max_frames:
            raise Rejected("too_many_frames", f"{shape[0]} frames > max {max_frames}")
        return int(shape[0])
    raise Rejected("bad_shape", f"shape {list(shape)}, expected [N,17,64,48] or [17,64,48]")


def read_header(fh: BinaryIO, max_frames: int) -> tuple[np.dtype, bool, int, int]:
    """Parse and check the header; return (dtype, fortran_order, frames, data_offset)."""
    shape, fortran, dtype = _numpy_header(fh)
    return _checked(shape, fortran, dtype, max_frames) + (fh.tell(),)


def _numpy_header(fh: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """NumPy's own header parser (a literal evaluation, never unpickling); junk is
    ``not_npy``."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # numpy raises ValueError/OSError/SyntaxError on junk
        raise Rejected("not_npy", str(exc).splitlines()[0][:200] or type(exc).__name__) from None
    return tuple(shape), bool(fortran), dtype


def _checked(shape: tuple[int, ...], fortran: bool, dtype: np.dtype,
             max_frames: int) -> tuple[np.dtype, bool, int]:
    if dtype.hasobject or dtype not in ACCEPTED_DTYPES:
        raise Rejected("bad_dtype", f"dtype {dtype.str}")
    return dtype, fortran, _frame_count(shape, max_frames)


def frame_warnings(frames: np.ndarray) -> list[list[str]]:
    """Per-frame oddities that are kept, not rejected: all-zero frames, no clear peak."""
    flat = frames.reshape(frames.shape[0], -1)
    return _warnings(flat.min(axis=1), flat.max(axis=1))


def _warnings(lo: np.ndarray, hi: np.ndarray) -> list[list[str]]:
    """``frame_warnings`` from each frame's minimum and maximum: a frame is all zero exactly
    when both are zero, and has no peak when its maximum is below ``NO_PEAK_BELOW``."""
    out: list[list[str]] = []
    for low, peak in zip(lo.tolist(), hi.tolist(), strict=True):
        if low == 0 and peak == 0:
            out.append(["all_zero"])
        elif peak < NO_PEAK_BELOW:
            out.append(["no_peak"])
        else:
            out.append([])
    return out


def check_values(frames: np.ndarray) -> list[list[str]]:
    """Reject NaN/Inf and absurd values; return the per-frame warnings (``frame_warnings``).

    One pass for both: each frame's minimum and maximum. NaN propagates through both and an
    infinity is one of them, so the frames are finite exactly when every minimum and maximum
    is; the frames' range and each frame's warnings follow from the same two numbers. Only
    a rejected file pays a second pass (to count its bad values)."""
    flat = frames.reshape(frames.shape[0], -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        bad = int((~np.isfinite(frames)).sum())
        raise Rejected("non_finite", f"{bad} NaN/Inf values")
    low, high = float(lo.min()), float(hi.max())
    if low < VALUE_MIN or high > VALUE_MAX:
        raise Rejected("out_of_range", f"values in [{low:.3g}, {high:.3g}], "
                       f"expected within [{VALUE_MIN}, {VALUE_MAX}]")
    return _warnings(lo, hi)


def read_heatmaps(fh: BinaryIO, size: int, max_frames: int = 4096) -> Heatmaps:
    """Validate and decode an open binary ``.npy`` stream of ``size`` bytes.

    Works on local files and on file objects of remote filesystems alike.
    """
    dtype, fortran, n, offset = read_header(fh, max_frames)
    shape = (n, *HEATMAP_SHAPE)
    expected = offset + n * int(np.prod(HEATMAP_SHAPE)) * dtype.itemsize
    if size != expected:
        raise Rejected("truncated", f"{size} bytes, header implies {expected}")
    try:
        buf = fh.read(expected - offset)
    except OSError as exc:
        raise Rejected("read_error", str(exc)[:200]) from None
    if len(buf) != expected - offset:
        raise Rejected("truncated", f"read {len(buf)} of {expected - offset} data bytes")
    return _decode(buf, dtype, fortran, shape)


def _decode(buf: Any, dtype: np.dtype, fortran: bool, shape: tuple[int, ...]) -> Heatmaps:
    """Frames from the data bytes (a view on ``buf`` when they are float32 little-endian in C
    order, the usual case; else a converted copy), checked."""
    arr = np.frombuffer(buf, dtype=dtype)
    arr = arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
    frames = np.ascontiguousarray(arr, dtype=np.float32)
    warnings = check_values(frames)
    return Heatmaps(frames=frames, warnings=warnings)


# Parsed headers by their exact bytes: a batch's files share one header, and numpy's parser
# (a Python literal evaluation) costs more than the rest of a file's checks. Same bytes,
# same parse, so the cache changes no outcome; it is bounded, and filled only with headers
# numpy accepted.
_HEADER_CACHE: dict[bytes, tuple[tuple[int, ...], bool, np.dtype]] = {}
_HEADER_CACHE_MAX = 256


def parse_header(data: Any, max_frames: int) -> tuple[np.dtype, bool, int, int]:
    """``read_header`` on the first bytes of an in-memory file: (dtype, fortran_order,
    frames, data_offset). Same rules and rejections, without a stream or a copy."""
    view = memoryview(data).cast("B")
    head = bytes(view[:12])
    if len(head) < 12 or head[:6] != b"\x93NUMPY" or head[6] not in (1, 2, 3) or head[7]:
        return read_header(io.BytesIO(bytes(view[:HEADER_MAX])), max_frames)
    start = 10 if head[6] == 1 else 12  # magic, version, then a 2- or 4-byte length
    key = bytes(view[:start + int.from_bytes(head[8:start], "little")])
    hit = _HEADER_CACHE.get(key)
    if hit is None:
        fh = io.BytesIO(key)
        hit = _numpy_header(fh)
        if fh.tell() != len(key):  # not the layout assumed above: no shortcut
            return read_header(io.BytesIO(bytes(view[:HEADER_MAX])), max_frames)
        if len(_HEADER_CACHE) < _HEADER_CACHE_MAX:
            _HEADER_CACHE[key] = hit
    return _checked(*hit, max_frames) + (len(key),)


def decode_heatmaps(data: Any, max_frames: int = 4096) -> Heatmaps:
    """``read_heatmaps`` on a whole file already in memory (bytes, bytearray, a uint8 array
    or a memoryview). The frames are a view on ``data`` when no conversion is needed."""
    view = memoryview(data).cast("B")
    dtype, fortran, n, offset = parse_header(view, max_frames)
    shape = (n, *HEATMAP_SHAPE)
    expected = offset + n * int(np.prod(HEATMAP_SHAPE)) * dtype.itemsize
    if len(view) != expected:
        raise Rejected("truncated", f"{len(view)} bytes, header implies {expected}")
    return _decode(view[offset:], dtype, fortran, shape)


def read_heatmap_file(path, max_frames: int = 4096) -> Heatmaps:
    """Validate and decode a local ``.npy`` file (raises ``Rejected``)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            return read_heatmaps(fh, size, max_frames)
    except OSError as exc:
        raise Rejected("read_error", f"{type(exc).__name__}: {exc}"[:200]) from None


def max_file_bytes(max_frames: int) -> int:
    """The largest size a valid file can have (float64, ``max_frames`` frames, big header)."""
    return HEADER_MAX + max_frames * int(np.prod(HEATMAP_SHAPE)) * 8


def _size_hint(fh: BinaryIO) -> int | None:
    """Bytes left in ``fh`` by its file's current size, when it has one (a local file)."""
    try:
        return max(0, os.fstat(fh.fileno()).st_size - fh.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def read_upto(fh: BinaryIO, want: int) -> memoryview:
    """Up to ``want`` bytes of ``fh`` (fewer at its end), read into one buffer.

    ``fh.read(want)`` with a generous bound (gigabytes for the largest valid file) makes
    Python reserve the whole bound before it shrinks the result, which cost several times
    the read itself on a small file. Instead the buffer is sized by the file's current size
    (plus one byte, to see its end without a second buffer) and grows only if the file turns
    out longer (it may grow between ``stat`` and ``read``), up to ``want``; it is not
    zero-filled first."""
    hint = _size_hint(fh)
    cap = min(want, (hint + 1) if hint is not None else 1 << 20)
    buf = np.empty(max(cap, 1), np.uint8)
    readinto = getattr(fh, "readinto", None)
    n = 0
    while n < want:
        if n == len(buf):
            grown = np.empty(min(want, max(2 * len(buf), 1 << 20)), np.uint8)
            grown[:n] = buf[:n]
            buf = grown
        room = memoryview(buf)[n:]
        if readinto is not None:
            got = readinto(room)
        else:
            block = fh.read(len(room))
            got = len(block)
            room[:got] = block
        if not got:
            break
        n += got
    return memoryview(buf)[:n]


def read_untrusted(fh: BinaryIO, max_frames: int = 4096) -> tuple[str, Heatmaps | Rejected]:
    """The one bounded reader of an untrusted ``.npy`` stream: ``(sha256, heatmaps)``, or
    ``(sha256, Rejected)`` for bad content. Classification, the retraining scan and ``show``
    all read through it.

    Why bounded: a file's size on disk says nothing once it can grow between ``stat`` and
    ``read``, and a labeled folder is as untrusted as an input one. At most
    ``max_file_bytes(max_frames) + 1`` bytes are ever held; a longer stream is hashed in
    4 MB pieces (its identity still covers every byte) and then rejected by its header.
    ``OSError`` before the first byte propagates (the caller decides what unreadable means);
    after it, it is a ``read_error`` rejection."""
    limit = max_file_bytes(max_frames)
    data = read_upto(fh, limit + 1)
    digest = hashlib.sha256(data)
    try:
        if len(data) <= limit:
            return digest.hexdigest(), decode_heatmaps(data, max_frames)
        del data  # bigger than any valid file
        while block := fh.read(1 << 22):
            digest.update(block)
        size = fh.tell()
        fh.seek(0)
        return digest.hexdigest(), read_heatmaps(fh, size, max_frames)
    except Rejected as rej:
        return digest.hexdigest(), rej
    except OSError as exc:
        return digest.hexdigest(), Rejected("read_error", f"{type(exc).__name__}: {exc}"[:200])
