"""Batch buffers the reader threads fill in place: a file's frames are read straight into its
rows of a model batch, not into a buffer of its own that is then copied into the batch.

Why: that copy was a fifth of the work phase on one-frame files (1.07 of 5.02 s at 10,000
files, ``bench/bench_classify.py``), on the one thread that also feeds the model; and each
file's own buffer was memory the reader threads allocated and freed once per file.

How, in file order (``BatchRing.claim`` runs on the consuming thread, as reads are submitted):

- a local file whose size is that of ``k`` float32 frames behind NumPy's 128-byte header
  (what ``np.save`` writes for these shapes) gets rows ``[r, r + k)`` of the batch being
  planned when ``k`` fits in a batch; when the room left is smaller, the next batch starts.
- its reader (``read_into``) reads the header, then the data into those rows, hashes both
  (the SHA-256 of the whole file) and keeps the rows only if the header declares exactly
  that layout, the file ends there and the values pass ``check_values``. Anything else is
  read again from the start by ``read_untrusted``, the one general reader, so a file's
  outcome (hash, rejection, warnings) never depends on the path it took. Rows that did not
  receive their file are a hole, dropped before the batch runs (one copy, rare).
- files without rows (remote input, other dtypes or layouts, more frames than a batch)
  come back in their own buffer, copied into batches of their own, as before.

A batch runs once it is sealed (planning moved past it) and every file planned into it was
consumed; its buffer is planned again once the model returned. ``RING`` buffers: the model
computes one while the readers fill the next.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from models.spec import HEATMAP_SHAPE
from tasks.classify.engine import aligned_zeros
from tasks.io.validate import Rejected, check_values, parse_header

NPY_HEADER = 128  # bytes of the header np.save writes for [N,17,64,48] and [17,64,48]
FRAME_BYTES = int(np.prod(HEATMAP_SHAPE)) * 4
RING = 2
FLOAT32 = np.dtype("<f4")
WAIT = object()  # ``claim``: no buffer free; ask again after a batch has run


@dataclass
class Batch:
    """One batch buffer and what its rows hold (file index, frame index, filled or a hole)."""

    buf: np.ndarray
    owner_file: np.ndarray
    owner_frame: np.ndarray
    filled: np.ndarray
    rows: int = 0
    planned: int = 0
    consumed: int = 0
    sealed: bool = False

    @classmethod
    def empty(cls, batch_size: int) -> Batch:
        return cls(aligned_zeros((batch_size, *HEATMAP_SHAPE)), np.zeros(batch_size, np.int32),
                   np.zeros(batch_size, np.int32), np.zeros(batch_size, bool))

    def add(self, index: int, frames: int) -> int:
        """Plan ``frames`` rows of file ``index``; returns the first row."""
        row = self.rows
        self.owner_file[row:row + frames] = index
        self.owner_frame[row:row + frames] = np.arange(frames, dtype=np.int32)
        self.filled[row:row + frames] = False
        self.rows += frames
        self.planned += 1
        return row

    def compact(self) -> int:
        """Drop the holes (rows whose file did not land in them); the rows left, in order."""
        n = self.rows
        if self.filled[:n].all():
            return n
        keep = np.flatnonzero(self.filled[:n])
        for arr in (self.buf, self.owner_file, self.owner_frame):
            arr[:len(keep)] = arr[keep]
        self.buf[len(keep):n] = 0  # a rejected file's values (NaN, say) never reach the engine
        return len(keep)


@dataclass(frozen=True)
class Slot:
    """Rows ``[row, row + frames)`` of ``batch``, planned for one file."""

    batch: Batch
    row: int
    frames: int

    @property
    def rows(self) -> np.ndarray:
        return self.batch.buf[self.row:self.row + self.frames]


def slot_frames(size: int, batch_size: int) -> int | None:
    """Frames a file of ``size`` bytes holds if it has the usual layout (else None), when they
    fit in one batch."""
    frames, rest = divmod(size - NPY_HEADER, FRAME_BYTES)
    return frames if size > NPY_HEADER and not rest and 1 <= frames <= batch_size else None


class BatchRing:
    """Plans files into ``RING`` batch buffers in order (``claim``) and hands batches back,
    in order, once they can run (``runnable``; ``release`` after the model call)."""

    def __init__(self, batch_size: int, count: int = RING):
        self.batch_size = batch_size
        self.free: deque[Batch] = deque(Batch.empty(batch_size) for _ in range(count))
        self.planned: deque[Batch] = deque()
        self.open: Batch | None = None
        self.index = 0  # the next file's index

    def claim(self, size: int, local: bool = True) -> Slot | None | object:
        """Rows for the next file (``Slot``), None when it goes the general way, or ``WAIT``
        when every buffer is planned and not yet run (the file's index is not used)."""
        frames = slot_frames(size, self.batch_size) if local else None
        if frames is None:
            self.index += 1
            return None
        if self.open is not None and self.open.rows + frames > self.batch_size:
            self.seal()
        if self.open is None:
            if not self.free:
                return WAIT
            self.open = self.free.popleft()
            self.planned.append(self.open)
        slot = Slot(self.open, self.open.add(self.index, frames), frames)
        self.index += 1
        return slot

    def seal(self) -> None:
        """No more files go into the batch being planned."""
        if self.open is not None:
            self.open.sealed = True
            self.open = None

    @staticmethod
    def done(slot: Slot, landed: bool) -> None:
        """The file of ``slot`` was consumed; ``landed``: its frames are in its rows."""
        slot.batch.consumed += 1
        slot.batch.filled[slot.row:slot.row + slot.frames] = landed

    def runnable(self) -> Iterator[Batch]:
        """Batches ready to run, in planning order."""
        while self.planned and self.planned[0].sealed and \
                self.planned[0].consumed == self.planned[0].planned:
            yield self.planned.popleft()

    def release(self, batch: Batch) -> None:
        """The model returned: the buffer may be planned again."""
        batch.rows = batch.planned = batch.consumed = 0
        batch.sealed = False
        self.free.append(batch)


def read_into(path: str, slot: Slot, max_frames: int
              ) -> tuple[str | None, list[list[str]] | Rejected | None]:
    """Read a local file into ``slot``'s rows: ``(sha256, warnings)`` when its frames landed
    there, ``(sha256, Rejected)`` when its values are rejected, or ``(None, None)`` when the
    file is not what its size said (the caller reads it again the general way). ``OSError``
    propagates."""
    rows = slot.rows
    with open(path, "rb", buffering=0) as fh:
        head = fh.read(NPY_HEADER)
        view = memoryview(rows).cast("B")
        got = 0
        while got < len(view):
            n = fh.readinto(view[got:])
            if not n:
                break
            got += n
        if len(head) != NPY_HEADER or got != len(view) or fh.read(1):
            return None, None  # shorter or longer than at discovery
    try:
        dtype, fortran, frames, offset = parse_header(head, max_frames)
    except Rejected:
        return None, None
    if dtype != FLOAT32 or fortran or frames != slot.frames or offset != NPY_HEADER:
        return None, None
    digest = hashlib.sha256(head)
    digest.update(view)
    try:
        warnings = check_values(rows)
    except Rejected as rej:
        return digest.hexdigest(), rej
    return digest.hexdigest(), warnings
