"""Inference: same numbers as the model itself, padding, multi-frame files, one load per
process, bounded read-ahead, and every bad file coming back with its reason code."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.classify.infer import classify_files, load_predictor, prefetch, read_input
from tasks.io.storage import Location
from tasks.io.validate import REASONS
from tests.support.classify_support import (
    TEMPERATURE,
    bad_files,
    good_frames,
    npy_bytes,
    write,
)


def reference_probs(registry: Path, frames: np.ndarray) -> np.ndarray:
    """softmax(logits / T) straight from the saved Keras model, the slow way."""
    from models.registry import Registry, load_model

    entry = Registry(registry).resolve()
    logits = load_model(entry).predict(frames, verbose=0).astype(np.float64)
    z = logits / entry.temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def test_chunk_matches_the_model_with_padding_and_multi_frame_files(tmp_path: Path,
                                                                    registry_dir: Path):
    single = good_frames(7, seed=1)
    multi = good_frames(5, seed=2)                     # one file of 5 frames spans batches
    for i, f in enumerate(single):
        write(tmp_path / "b" / f"s{i}.npy", npy_bytes(f[None]))
    write(tmp_path / "b" / "multi.npy", npy_bytes(multi))
    write(tmp_path / "b" / "flat.npy", npy_bytes(single[0]))          # [17,64,48] layout
    write(tmp_path / "b" / "half.npy", npy_bytes(multi[:2].astype(np.float16)))
    files = sorted((p.relative_to(tmp_path).as_posix(), p.stat().st_size)
                   for p in (tmp_path / "b").iterdir())
    batches: list[dict] = []
    res = classify_files(str(tmp_path), files, str(registry_dir), "v0001", batch_size=4,
                         on_batch=batches.append)
    assert [f.path for f in res.files] == [p for p, _ in files]
    assert res.probabilities.shape == (7 + 5 + 1 + 2, 17)
    # One-frame float32 files are read into their batch rows; the float16 file (whose size
    # is a float32 frame's), the 5-frame file (more than a batch) come back in their own
    # buffers and run in batches of their own: at most two partial batches besides holes.
    sizes = [b["frames"] for b in batches]
    assert sum(sizes) == 15 and max(sizes) == 4 and res.batches == len(sizes) <= 6
    by_name = {f.path: i for i, f in enumerate(res.files)}
    m = res.file_index == by_name["b/multi.npy"]
    assert res.frame_index[m].tolist() == [0, 1, 2, 3, 4]
    assert res.model_version == "v0001" and res.class_names[0] == "action_down"
    ref = reference_probs(registry_dir, multi)
    np.testing.assert_allclose(res.probabilities[m], ref, atol=2e-4)
    half = res.file_index == by_name["b/half.npy"]
    np.testing.assert_allclose(res.probabilities[half],
                               reference_probs(registry_dir, multi[:2].astype(np.float16)
                                               .astype(np.float32)), atol=2e-4)
    np.testing.assert_allclose(res.probabilities.sum(axis=1), 1.0, atol=1e-5)
    # The temperature really is applied: T=1 would be sharper.
    assert TEMPERATURE != 1.0
    for f in res.files:
        assert f.sha256 == hashlib.sha256((tmp_path / f.path).read_bytes()).hexdigest()
        assert f.reason is None and f.frames >= 1


def test_model_is_loaded_once_per_process(registry_dir: Path):
    a = load_predictor(str(registry_dir), "v0001", 4)
    b = load_predictor(str(registry_dir) + "/", "v0001", 4)
    assert a is b
    assert load_predictor(str(registry_dir), "v0001", 8) is not a  # other input signature


def test_every_rejection_reason_comes_back_with_its_code(tmp_path: Path):
    bad = bad_files()
    assert set(bad) == set(REASONS) - {"read_error"}
    loc = Location(str(tmp_path))
    for reason, data in bad.items():
        write(tmp_path / f"{reason}.npy", data)
        out, frames = read_input(loc, f"{reason}.npy", max_frames=4096)
        assert frames is None
        assert out.reason == reason, (reason, out.detail)
        assert out.detail
        assert out.sha256 == hashlib.sha256(data).hexdigest()
    # Too many frames by the configured bound, for a file that is otherwise fine.
    write(tmp_path / "five.npy", npy_bytes(good_frames(5)))
    out, _ = read_input(loc, "five.npy", max_frames=4)
    assert out.reason == "too_many_frames"
    # A file that vanished, or cannot be read at all, is skipped (retried), not recorded.
    out, _ = read_input(loc, "gone.npy", max_frames=4)
    assert out.skipped == "vanished" and out.sha256 is None
    (tmp_path / "dir.npy").mkdir()
    out, _ = read_input(loc, "dir.npy", max_frames=4)
    assert out.skipped == "unreadable" and out.reason is None


def test_a_big_file_beyond_any_valid_size_is_hashed_in_pieces_and_rejected(tmp_path: Path):
    data = npy_bytes(good_frames(3)) + b"\0" * 4096  # trailing garbage
    write(tmp_path / "big.npy", data)
    out, _ = read_input(Location(str(tmp_path)), "big.npy", max_frames=1)
    assert out.reason in ("too_many_frames", "truncated")
    assert out.sha256 == hashlib.sha256(data).hexdigest()


def test_bad_files_do_not_stop_the_rest_of_the_chunk(tmp_path: Path, registry_dir: Path):
    write(tmp_path / "a.npy", npy_bytes(good_frames(1)))
    write(tmp_path / "b.npy", bad_files()["non_finite"])
    write(tmp_path / "c.npy", npy_bytes(good_frames(2)))
    files = [(n, (tmp_path / n).stat().st_size) for n in ("a.npy", "b.npy", "c.npy")]
    res = classify_files(str(tmp_path), files, str(registry_dir), "v0001", batch_size=4)
    assert [f.reason for f in res.files] == [None, "non_finite", None]
    assert res.file_index.tolist() == [0, 2, 2]


def test_prefetch_keeps_order_and_bounds_what_is_in_flight():
    started = 0
    lock = threading.Lock()

    def work(item: str) -> str:
        nonlocal started
        with lock:
            started += 1
        return item.upper()

    items = [(f"f{i}", 100) for i in range(60)]
    out = []
    ahead = []
    for r in prefetch(items, work, threads=4, budget_bytes=300):
        out.append(r)
        time.sleep(0.002)  # a slow consumer: the readers must not run far ahead of it
        with lock:
            ahead.append(started - len(out))
    assert out == [f"F{i}" for i in range(60)]
    assert max(ahead) <= 3 and max(ahead) >= 2
    with pytest.raises(StopIteration):
        next(prefetch([], work, threads=2, budget_bytes=10))
