"""Frames read straight into batch rows: the same outcome as the general reader for every
file, stale sizes from discovery, and the ring of buffers planned in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.classify.batches import WAIT, BatchRing, Slot
from tasks.classify.infer import classify_files, read_input
from tasks.io.storage import Location
from tests.support.classify_support import bad_files, good_frames, npy_bytes, write


def test_a_file_read_into_its_rows_comes_out_as_the_general_reader_says(tmp_path: Path):
    """Every rejection, and good files of every layout whose size looks like float32 frames
    (a float16 and an int32 file among them): same hash, reason, detail, frames and
    warnings with rows or without; the frames land in the rows only when they are valid."""
    files = {f"{k}.npy": v for k, v in bad_files().items()}
    files.update({"one.npy": npy_bytes(good_frames(1)), "three.npy": npy_bytes(good_frames(3)),
                  "flat.npy": npy_bytes(good_frames(1)[0]),
                  "zero.npy": npy_bytes(np.zeros((1, 17, 64, 48), np.float32)),
                  "half.npy": npy_bytes(good_frames(2).astype(np.float16))})
    loc = Location(str(tmp_path))
    landed = set()
    for name, data in files.items():
        write(tmp_path / name, data)
        ring = BatchRing(4)
        slot = ring.claim(len(data))
        general, frames = read_input(loc, name, 4096)
        fast, rows = read_input(loc, name, 4096, slot if isinstance(slot, Slot) else None)
        assert vars(fast) == vars(general), name
        if rows is not None and isinstance(slot, Slot) and rows is not frames:
            np.testing.assert_array_equal(rows, frames)
            if np.may_share_memory(rows, slot.batch.buf):
                landed.add(name)
    assert landed == {"one.npy", "three.npy", "flat.npy", "zero.npy"}


def test_sizes_that_changed_since_discovery_give_the_same_result(tmp_path: Path,
                                                                registry_dir: Path):
    """A file that grew from one frame to two and one that shrank from three to one are read
    the general way: rows, hashes and probabilities as with the true sizes."""
    frames = good_frames(7, seed=4)
    for i in range(5):
        write(tmp_path / f"b/f{i}.npy", npy_bytes(frames[i:i + 1]))
    write(tmp_path / "b/grew.npy", npy_bytes(frames[5:7]))
    write(tmp_path / "b/shrank.npy", npy_bytes(frames[:1]))
    true = sorted((p.relative_to(tmp_path).as_posix(), p.stat().st_size)
                  for p in (tmp_path / "b").iterdir())
    stale = [(rel, len(npy_bytes(frames[:1])) if rel.endswith("grew.npy") else
              len(npy_bytes(frames[:3])) if rel.endswith("shrank.npy") else size)
             for rel, size in true]
    a = classify_files(str(tmp_path), true, str(registry_dir), "v0001", batch_size=4)
    b = classify_files(str(tmp_path), stale, str(registry_dir), "v0001", batch_size=4)
    assert [vars(f) for f in a.files] == [vars(f) for f in b.files]
    assert a.file_index.tolist() == b.file_index.tolist()
    assert a.frame_index.tolist() == b.frame_index.tolist() == [0] * 5 + [0, 1] + [0]
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_the_ring_plans_in_order_and_waits_for_a_free_buffer():
    ring = BatchRing(4, count=2)
    slots = [ring.claim(128 + 4 * 52224 * f) for f in (1, 2, 3)]  # 3 frames: a new batch
    assert [(s.row, s.frames) for s in slots] == [(0, 1), (1, 2), (0, 3)]
    assert slots[0].batch is slots[1].batch is not slots[2].batch
    assert ring.claim(128 + 4 * 52224 * 2) is WAIT  # both buffers planned, none has run
    assert ring.claim(100) is None  # not the usual layout: read the general way
    assert ring.index == 4
    for s in slots[:2]:
        ring.done(s, landed=True)
    first = list(ring.runnable())
    assert first == [slots[0].batch] and first[0].rows == 3
    ring.release(first[0])
    again = ring.claim(128 + 4 * 52224)
    assert again.batch is first[0] and again.row == 0 and ring.index == 5
