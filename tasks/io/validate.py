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
from dataclasses import dataclass, field
from typing import BinaryIO

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
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Rejected:
        raise
    except Exception as exc:  # numpy raises ValueError/OSError/SyntaxError on junk
        raise Rejected("not_npy", str(exc).splitlines()[0][:200] or type(exc).__name__) from None
    if dtype.hasobject or dtype not in ACCEPTED_DTYPES:
        raise Rejected("bad_dtype", f"dtype {dtype.str}")
    frames = _frame_count(tuple(shape), max_frames)
    return dtype, bool(fortran), frames, fh.tell()


def frame_warnings(frames: np.ndarray) -> list[list[str]]:
    """Per-frame oddities that are kept, not rejected: all-zero frames, no clear peak."""
    peak = frames.reshape(frames.shape[0], -1).max(axis=1)
    absmax = np.abs(frames.reshape(frames.shape[0], -1)).max(axis=1)
    out: list[list[str]] = []
    for p, a in zip(peak, absmax, strict=True):
        if a == 0:
            out.append(["all_zero"])
        elif p < NO_PEAK_BELOW:
            out.append(["no_peak"])
        else:
            out.append([])
    return out


def check_values(frames: np.ndarray) -> None:
    if not np.isfinite(frames).all():
        bad = int((~np.isfinite(frames)).sum())
        raise Rejected("non_finite", f"{bad} NaN/Inf values")
    lo, hi = float(frames.min()), float(frames.max())
    if lo < VALUE_MIN or hi > VALUE_MAX:
        raise Rejected("out_of_range", f"values in [{lo:.3g}, {hi:.3g}], "
                       f"expected within [{VALUE_MIN}, {VALUE_MAX}]")


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
    arr = np.frombuffer(buf, dtype=dtype)
    arr = arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
    frames = np.ascontiguousarray(arr, dtype=np.float32)
    check_values(frames)
    return Heatmaps(frames=frames, warnings=frame_warnings(frames))


def read_heatmap_file(path, max_frames: int = 4096) -> Heatmaps:
    """Validate and decode a local ``.npy`` file (raises ``Rejected``)."""
    import os

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            return read_heatmaps(fh, size, max_frames)
    except OSError as exc:
        raise Rejected("read_error", f"{type(exc).__name__}: {exc}"[:200]) from None


def max_file_bytes(max_frames: int) -> int:
    """The largest size a valid file can have (float64, ``max_frames`` frames, big header)."""
    return HEADER_MAX + max_frames * int(np.prod(HEATMAP_SHAPE)) * 8


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
    data = fh.read(limit + 1)
    digest = hashlib.sha256(data)
    try:
        if len(data) <= limit:
            return digest.hexdigest(), read_heatmaps(io.BytesIO(data), len(data), max_frames)
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
