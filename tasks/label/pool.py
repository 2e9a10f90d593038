"""The frames `label suggest` chooses from: classified frames nobody labeled yet, with the
model's probabilities and each frame's keypoint features (no Prefect).

Why from the predictions: they hold every classified frame's identity (path, frame,
content hash) and the model's full probability vector, so the margin needs no model run.
The frames themselves are found again by content hash, in the input or the archive, exactly
as re-scoring and retraining find them (``tasks.adapt.stream``): a file that is missing or
changed since it was classified is counted and named, never guessed.

What it gives up: a pool larger than ``size`` frames is a uniform sample (seeded): the
selection is over that sample, and a file is read once however many of its frames it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from models.keypoints import keypoint_features
from tasks.adapt.stream import Tally, classified_files, find, read_found
from tasks.classify.archive import known_archive
from tasks.classify.ledger import Ledger
from tasks.monitor.feedback import read_feedback

COLUMNS = ["source_path", "batch", "frame_index", "content_sha256", "label", "confidence",
           "probabilities", "model_version"]
Key = tuple[str, str]          # (source_path, content_sha256): one classified file


@dataclass
class Pool:
    """Unlabeled classified frames, one row each, in (path, frame) order."""

    rows: pa.Table                # COLUMNS of the predictions, one per frame
    probs: np.ndarray             # float32 [N, C], the model's class order
    features: np.ndarray          # float32 [N, F], models.keypoints.keypoint_features
    eligible: int                 # frames matching the filters, before labeled / sample
    already_labeled: int          # of those, frames with a recorded label (skipped)
    files: Tally = field(default_factory=Tally)   # files of the sample, by outcome

    def __len__(self) -> int:
        return self.rows.num_rows


def labeled_keys(output_dir: str) -> set[tuple[str, int, str]]:
    """(source_path, frame_index, content_sha256) of every frame with a recorded label."""
    return keys_of(read_feedback(output_dir))


def keys_of(feedback: pa.Table) -> set[tuple[str, int, str]]:
    """The frame keys of a feedback table (``tasks.monitor.feedback.read_feedback``)."""
    return set(zip(*(feedback[c].to_pylist() for c in ("source_path", "frame_index",
                                                        "content_sha256")), strict=True))


def of_classes(feedback: pa.Table, class_names: Sequence[str]) -> pa.Table:
    """The labels that name one of ``class_names`` (others are counted where imported)."""
    known = set(class_names)
    return feedback.filter(pa.array([t in known for t in feedback["true_label"].to_pylist()],
                                    pa.bool_()))


def unlabeled(preds: pa.Table, labeled: set[tuple[str, int, str]]) -> pa.Table:
    """The prediction rows whose frame has no recorded label."""
    keys = zip(*(preds[c].to_pylist() for c in ("source_path", "frame_index",
                                                 "content_sha256")), strict=True)
    return preds.filter(pa.array([k not in labeled for k in keys], pa.bool_()))


def build_pool(preds: pa.Table, labeled: set[tuple[str, int, str]], output_dir: str,
               input_dir: str, *, size: int = 5000, seed: int = 0, archive: str | None = None,
               max_frames_per_file: int = 4096,
               progress: Callable[[int, int], None] | None = None) -> Pool:
    """Up to ``size`` frames of ``preds`` (COLUMNS; e.g. ``read_predictions`` with the
    caller's ``--since``/``--batch``) not in ``labeled`` (``keys_of``), each with its
    keypoint features."""
    free = unlabeled(preds, labeled)
    already = preds.num_rows - free.num_rows
    if free.num_rows > size:
        keep = np.sort(np.random.default_rng(seed).choice(free.num_rows, size, replace=False))
        free = free.take(pa.array(keep))
    free = free.sort_by([("source_path", "ascending"), ("content_sha256", "ascending"),
                         ("frame_index", "ascending")])
    want = wanted_frames(free)
    feats: dict[tuple[str, str, int], np.ndarray] = {}
    tally = Tally()
    for n, (key, idx, outcome, frames) in enumerate(
            read_frames(want, output_dir, input_dir, archive, max_frames_per_file)):
        tally.add(outcome, key[0])
        if frames is not None:
            for i, f in zip(idx, keypoint_features(frames), strict=True):
                feats[(*key, i)] = f
        if progress is not None:
            progress(n + 1, len(want))
    ok = [(p, s, i) in feats for p, s, i in zip(
        *(free[c].to_pylist() for c in ("source_path", "content_sha256", "frame_index")),
        strict=True)]
    free = free.filter(pa.array(ok, pa.bool_()))
    keys = zip(*(free[c].to_pylist() for c in ("source_path", "content_sha256",
                                               "frame_index")), strict=True)
    features = np.stack([feats[k] for k in keys]) if free.num_rows else np.zeros((0, 51))
    probs = np.asarray(free["probabilities"].to_pylist(), np.float32).reshape(
        free.num_rows, -1)
    return Pool(free, probs, features.astype(np.float32), preds.num_rows, already, tally)


def wanted_frames(rows: pa.Table) -> dict[Key, list[int]]:
    """Frame indices wanted per classified file, in row order."""
    want: dict[Key, list[int]] = {}
    for p, s, i in zip(*(rows[c].to_pylist() for c in ("source_path", "content_sha256",
                                                      "frame_index")), strict=True):
        want.setdefault((p, s), []).append(int(i))
    return want


def read_frames(want: dict[Key, list[int]], output_dir: str, input_dir: str,
                archive: str | None = None, max_frames_per_file: int = 4096
                ) -> Iterator[tuple[Key, list[int], str, np.ndarray | None]]:
    """(file, frame indices, outcome, those frames or None) for each wanted file, read
    once, located by the ledger's record and checked by hash. A file the ledger does not
    hold as classified is ``missing``; a frame index past the file's end is dropped."""
    ledger = {(t.path, t.sha256): t for t in classified_files(Ledger.load(output_dir).entries)}
    targets = [ledger[k] for k in want if k in ledger]
    found, lost = find(targets, input_dir, archive or known_archive(output_dir))
    for key in want:
        if key not in ledger:
            yield key, want[key], "missing", None
    for t, why in lost:
        yield (t.path, t.sha256), want[(t.path, t.sha256)], why, None
    for t in sorted(found, key=lambda t: (t.path, t.sha256)):
        outcome, frames = read_found(t, max_frames_per_file)
        idx = [i for i in want[(t.path, t.sha256)] if frames is not None and i < len(frames)]
        yield (t.path, t.sha256), idx, outcome, None if frames is None else frames[idx]


def frames_of(rows: pa.Table, output_dir: str, input_dir: str, archive: str | None = None,
              max_frames_per_file: int = 4096) -> list[np.ndarray | None]:
    """The frame of each row (None when its file can no longer be read as classified)."""
    got: dict[tuple[str, str, int], np.ndarray] = {}
    for key, idx, _, frames in read_frames(wanted_frames(rows), output_dir, input_dir,
                                           archive, max_frames_per_file):
        if frames is not None:
            for i, f in zip(idx, frames, strict=True):
                got[(*key, i)] = f
    return [got.get(k) for k in zip(*(rows[c].to_pylist() for c in (
        "source_path", "content_sha256", "frame_index")), strict=True)]


def class_names_of(preds: pa.Table, fallback: Sequence[str]) -> list[str]:
    """The class order of the probability vectors (the file metadata), else ``fallback``."""
    import json

    raw = (preds.schema.metadata or {}).get(b"posebatch.class_names")
    return json.loads(raw) if raw else list(fallback)

