"""A classified output built the cheap real way, for the adaptation tests: real ``.npy``
files in an input folder, read by classification's own reader and committed through the real
ledger (``commit_chunk``, as a classification chunk is, at a chosen time), and labels
recorded through the real feedback store (``tasks.monitor.feedback``). No model is run: the
predictions' probabilities are random, which these tests never look at."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from models.spec import class_names
from tasks.classify.infer import ChunkResult, read_input
from tasks.classify.ledger import Ledger
from tasks.classify.outputs import commit_chunk, judge_chunk
from tasks.io.storage import Location
from tasks.monitor.feedback import match_labels, parse_labels, record_feedback
from tests.support.classify_support import good_frames, npy_bytes, write


def write_inputs(inp: Path, files: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """One ``.npy`` file per relative path with that many frames (each file its own frames);
    returns the frames written, by path."""
    out = {}
    for k, (rel, n) in enumerate(sorted(files.items())):
        out[rel] = good_frames(n, seed=seed + 7 * k)
        write(inp / rel, npy_bytes(out[rel]))
    return out


def commit_files(inp: Path, out: Path, rels: list[str], at: datetime,
                 commit_id: str) -> None:
    """Read ``rels`` as classification does and commit them as one chunk at ``at``."""
    names = class_names()
    files, fidx, fr = [], [], []
    loc = Location(str(inp))
    for i, rel in enumerate(rels):
        outcome, frames = read_input(loc, rel, 4096)
        assert frames is not None, f"{rel}: {outcome.reason}"
        files.append(outcome)
        fidx += [i] * len(frames)
        fr += list(range(len(frames)))
    rng = np.random.default_rng(len(fidx))
    probs = rng.dirichlet(np.ones(len(names)), size=len(fidx)).astype(np.float32)
    res = ChunkResult(files, np.array(fidx, np.int32), np.array(fr, np.int32), probs, names,
                      "v0001")
    ledger = Ledger.load(str(out))
    sizes = {r: (os.stat(inp / r).st_size, os.stat(inp / r).st_mtime_ns) for r in rels}
    commit_chunk(ledger, judge_chunk(res, ledger), sizes, commit_id, "run-1", at=at)


def record_labels(out: Path, rows: list[tuple[str, int | None, str]],
                  at: datetime | None = None) -> int:
    """Record ``(source_path, frame_index or None, label)`` rows as ``posebatch feedback``
    does; returns how many frames matched a prediction."""
    text = "source_path,frame_index,label\n" + "".join(
        f"{p},{'' if f is None else f},{lab}\n" for p, f, lab in rows)
    preds = ds.dataset(out / "predictions", partitioning="hive").to_table()
    matched = match_labels(parse_labels(text), preds, class_names(),
                           recorded_at=at or datetime.now(UTC))["matched"]
    record_feedback(str(out), matched)
    return matched.num_rows
