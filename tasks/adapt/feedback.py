"""Labeled feedback as training data: the frames people labeled with ``posebatch feedback``,
found again by content hash, and a held-out split of them that stays put (no Prefect).

The labels are read from their one owner, ``tasks.monitor.feedback.read_feedback`` (one row
per (source_path, frame_index, content_sha256), the latest label winning); the frames are
the recorded bytes, located and checked as ``tasks.adapt.stream`` does (so a file moved to
the ``--move-processed`` archive is still found, and a file rewritten in place is refused).
A label of a class the model does not have, or of a frame whose file is missing, changed or
refused, is counted and named, never used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.spec import HEATMAP_SHAPE
from tasks.adapt.stream import NAMED, Tally, classified_files, find, read_found
from tasks.classify.archive import known_archive
from tasks.classify.discover import batch_of
from tasks.classify.ledger import Ledger
from tasks.classify.rescore import Target
from tasks.monitor.feedback import read_feedback

MIN_BATCHES = 3  # fewer distinct batches than this: hold out whole files instead


@dataclass
class FeedbackFrames:
    """Labeled frames, one per recorded label that could be used, in (path, content, frame)
    order. ``tally`` counts the labeled frames of known classes by outcome (the paths it
    names are files); ``unknown_class``: labels naming no class of ``class_names``
    (``unknown_labels``: the first ``NAMED`` of those names, sorted)."""

    frames: np.ndarray            # float32 [N, 17, 64, 48]
    labels: np.ndarray            # int64 [N], index into class_names
    class_names: list[str]
    source_path: list[str]
    frame_index: np.ndarray       # int32 [N]
    content_sha256: list[str]
    batch: list[str]              # the input batch folder ("" for a file in the input root)
    recorded: int                 # labels in the store
    unknown_class: int
    unknown_labels: list[str]
    tally: Tally = field(default_factory=Tally)


def feedback_frames(output_dir: str, input_dir: str, class_names: Sequence[str],
                    archive: str | None = None, max_frames_per_file: int = 4096
                    ) -> FeedbackFrames:
    """Every recorded label whose ``true_label`` is one of ``class_names``, with its frame.

    Each labeled file is read once. A label whose (path, content) the ledger does not hold
    as classified (forgotten since) counts as ``missing``: without the recorded size the
    file cannot be located, and nothing is guessed. ``archive``: default the output's
    remembered ``--move-processed`` folder."""
    names = list(class_names)
    index = {n: i for i, n in enumerate(names)}
    table = read_feedback(output_dir)
    rows = sorted(zip(*(table[c].to_pylist() for c in
                        ("source_path", "content_sha256", "frame_index", "true_label")),
                      strict=True))
    unknown = sorted({r[3] for r in rows if r[3] not in index})
    wanted: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for path, sha, frame, label in rows:
        if label in index:
            wanted.setdefault((path, sha), []).append((int(frame), index[label]))
    tally = Tally()
    ledger = {(t.path, t.sha256): t for t in classified_files(Ledger.load(output_dir).entries)}
    for (path, sha), labels in wanted.items():
        if (path, sha) not in ledger:
            tally.add("missing", path, len(labels))
    found, lost = find([ledger[k] for k in wanted if k in ledger], input_dir,
                       archive or known_archive(output_dir))
    for t, why in lost:
        tally.add(why, t.path, len(wanted[(t.path, t.sha256)]))
    picked = [_frames_of(t, wanted[(t.path, t.sha256)], max_frames_per_file, tally)
              for t in sorted(found, key=lambda t: (t.path, t.sha256))]
    picked = [p for p in picked if p is not None]
    unknown_rows = sum(1 for r in rows if r[3] not in index)
    return _assemble(picked, names, len(rows), unknown, unknown_rows, tally)


def _frames_of(t: Target, labels: list[tuple[int, int]], max_frames_per_file: int,
               tally: Tally) -> tuple[Target, np.ndarray, np.ndarray, np.ndarray] | None:
    """(target, frame indices, labels, frames copied out of the file) of one labeled file
    read and checked; None (counted) when it cannot be used. A frame index beyond the
    recorded content's frames labels nothing there: counted as missing."""
    outcome, frames = read_found(t, max_frames_per_file)
    if frames is None:
        tally.add(outcome, t.path, len(labels))
        return None
    inside = [(f, lab) for f, lab in labels if f < len(frames)]
    if len(inside) < len(labels):
        tally.add("missing", t.path, len(labels) - len(inside))
    if not inside:
        return None
    tally.add("found", t.path, len(inside))
    idx = np.array([f for f, _ in inside], np.int32)
    return t, idx, np.array([lab for _, lab in inside], np.int64), frames[idx]


def _assemble(picked: list[tuple[Target, np.ndarray, np.ndarray, np.ndarray]],
              names: list[str], recorded: int, unknown: list[str], unknown_rows: int,
              tally: Tally) -> FeedbackFrames:
    """One ``FeedbackFrames`` from each usable file's frames and labels."""
    if not picked:
        picked = [(Target("", "", 0, 0, 0), np.empty(0, np.int32), np.empty(0, np.int64),
                   np.empty((0, *HEATMAP_SHAPE), np.float32))]
    paths = [t.path for t, idx, _, _ in picked for _ in range(len(idx))]
    return FeedbackFrames(
        frames=np.concatenate([p[3] for p in picked]).astype(np.float32, copy=False),
        labels=np.concatenate([p[2] for p in picked]),
        class_names=names, source_path=paths,
        frame_index=np.concatenate([p[1] for p in picked]),
        content_sha256=[t.sha256 for t, idx, _, _ in picked for _ in range(len(idx))],
        batch=[batch_of(p) for p in paths], recorded=recorded, unknown_class=unknown_rows,
        unknown_labels=unknown[:NAMED], tally=tally)


# -- the held-out split -----------------------------------------------------------------------
def _score(seed: int, key: str) -> float:
    """A group's place in [0, 1): a hash of the seed and its name, not of its company."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


def _keys(batches: Sequence[str], paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """(each frame's group at the level in use, each frame's batch). A file in the input root
    is its own batch (as ``classify`` takes it)."""
    if len(batches) != len(paths):
        raise ValueError(f"{len(batches)} batches for {len(paths)} paths")
    own = [b or p for b, p in zip(batches, paths, strict=True)]
    return (own if len(set(own)) >= MIN_BATCHES else list(paths)), own


def holdout_keys(batches: Sequence[str], paths: Sequence[str], fraction: float = 0.3,
                 seed: int = 0, keep: Collection[str] = ()) -> set[str]:
    """The groups held out: whole batches when there are at least ``MIN_BATCHES``, else
    whole files; see ``holdout_split``. Pass them as ``exclude`` to
    ``tasks.adapt.stream.recent_unlabeled`` so a held-out frame is not adapted to either."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    keys, own = _keys(batches, paths)
    groups = sorted(set(keys))
    if len(groups) < 2:
        return set()
    score = {g: _score(seed, g) for g in groups}
    kept = {k for k, b, p in zip(keys, own, paths, strict=True) if {k, b, p} & set(keep)}
    held = {g for g in groups if score[g] < fraction} | kept
    if not held:          # at least one: the group nearest to being held out by its hash
        held = {min(groups, key=score.__getitem__)}
    if len(held) == len(groups):   # never all: release the one furthest from it, not kept
        free = [g for g in groups if g not in kept] or groups
        held.discard(max(free, key=score.__getitem__))
    return held


def holdout_split(batches: Sequence[str], paths: Sequence[str], fraction: float = 0.3,
                  seed: int = 0, keep: Collection[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx), int64 indices into the frames: about ``fraction`` held out,
    grouped so that no batch (or, with fewer than 3 batches, no file) is on both sides.

    Why grouped: frames of one batch share a recording (people, camera, session); a test
    frame whose neighbours were trained on says little about frames to come. With fewer
    than 3 batches, whole batches would hold out half or more, so whole files are held out
    (at least one when there are 2 or more; a single file is all training).

    Why hashed, and stable: each group is held out when the hash of ``f"{seed}:{name}"``
    falls below ``fraction``, a property of the group alone. Labels keep arriving; a split
    recomputed over more feedback must not move a frame the gate tested on into a later
    retrain's training data, or the gate would judge a model on frames it learnt. The
    share is therefore about ``fraction`` of the groups, not exactly of the frames.

    The fix-ups are the only exceptions: at least one group is held out (the lowest hash)
    and never all (the highest is released), and the level switches from files to batches
    when a third batch arrives. A caller that records the held-out keys (``holdout_keys``,
    e.g. in the model's metadata) and passes them back as ``keep`` keeps those frames held
    out whatever arrives (a kept file holds out its batch at batch level), unless that
    would leave nothing to train on."""
    keys, _ = _keys(batches, paths)
    held = holdout_keys(batches, paths, fraction, seed, keep)
    test = np.array([k in held for k in keys], bool)
    return np.flatnonzero(~test).astype(np.int64), np.flatnonzero(test).astype(np.int64)
