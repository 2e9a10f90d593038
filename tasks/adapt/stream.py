"""Frames of classified files, found again by content hash (no Prefect).

Why by hash: the ledger records every classified file's path and the SHA-256 of the bytes
that were classified. Data for a retrain must be those bytes, not whatever lies at that path
today: an input rewritten in place holds other frames, and ``--move-processed`` may have
moved the file to the archive, under a suffixed name when the name was taken. So a file is
located exactly as re-scoring locates it (``tasks.classify.rescore.locate``: the input
folder, then the archive, a renamed copy recognised by its hash), read once through the one
bounded validator (``tasks.io.validate.read_untrusted``, via the reader classification uses,
``tasks.classify.infer.read_input``; never unpickling) and kept only when its bytes hash to
the recorded content. A file that is missing, changed, refused or unreadable is counted and
named, never guessed.

What it gives up: only the archive the output remembers (the last ``--move-processed``
folder, ``tasks.classify.archive.known_archive``) or the one passed is searched, and only
when it is local (as for re-scoring); a file moved to an earlier archive counts as missing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.spec import HEATMAP_SHAPE
from tasks.classify.archive import known_archive
from tasks.classify.infer import read_input
from tasks.classify.ledger import Ledger
from tasks.classify.rescore import Target, locate
from tasks.io.storage import Location, is_remote

NAMED = 20  # paths named per problem; the counts cover every one
PROBLEMS = ("missing", "changed", "rejected", "unreadable")


@dataclass
class Tally:
    """What looking for classified files gave: a count per outcome and the first ``NAMED``
    paths of each problem. The unit is the caller's: files (``recent_unlabeled``) or labeled
    frames (``tasks.adapt.feedback``); ``considered`` is the sum of the outcomes.

    ``missing``: in neither the input nor the archive; ``changed``: a file is there, but its
    bytes are not the recorded content; ``rejected``: the recorded content, refused by the
    validator now (e.g. a lower ``max_frames_per_file``); ``unreadable``: could not be
    read (permissions, I/O)."""

    considered: int = 0
    found: int = 0
    missing: int = 0
    changed: int = 0
    rejected: int = 0
    unreadable: int = 0
    named: dict[str, list[str]] = field(default_factory=dict)

    def add(self, outcome: str, path: str, n: int = 1) -> None:
        """Count ``n`` items of ``outcome`` for ``path`` (named once, up to ``NAMED``)."""
        if outcome != "found" and outcome not in PROBLEMS:
            raise ValueError(f"unknown outcome {outcome!r}")
        self.considered += n
        setattr(self, outcome, getattr(self, outcome) + n)
        if outcome != "found":
            names = self.named.setdefault(outcome, [])
            if len(names) < NAMED and path not in names:
                names.append(path)


@dataclass
class UnlabeledFrames:
    """A random sample of recently classified frames, with where each came from.

    ``files`` tallies the files looked at (in sampled order, until enough frames were read);
    ``window_files`` is how many classified files the window held."""

    frames: np.ndarray            # float32 [N, 17, 64, 48]
    source_path: list[str]        # the ledger's path (the rows' source_path)
    frame_index: np.ndarray       # int32 [N]
    content_sha256: list[str]
    window_files: int
    files: Tally

    @property
    def keys(self) -> list[tuple[str, int]]:
        """(source_path, frame_index) of each frame."""
        return list(zip(self.source_path, self.frame_index.tolist(), strict=True))


# -- the building block ---------------------------------------------------------------------
def classified_files(entries: pa.Table, since: datetime | None = None,
                     until: datetime | None = None) -> list[Target]:
    """One ``Target`` per classified (path, sha256) of the ledger's entries, in that order;
    with ``since``/``until``, only those committed in between (inclusive). An entry without
    ``committed_at`` (written before the ledger recorded it) has no time and is left out of
    any window. Only ``classified`` entries: a copy of known content is a ``duplicate``
    with no rows of its own, and a ``rescored`` entry repeats a classified one."""
    e = entries.filter(pc.equal(entries["status"], "classified"))
    cols = ("path", "sha256", "frames", "size", "mtime_ns", "committed_at")
    out: dict[tuple[str, str], Target] = {}
    for p, sha, frames, size, mtime, at in zip(*(e[c].to_pylist() for c in cols), strict=True):
        if since is not None or until is not None:
            when = _when(at)
            if when is None or (since and when < since) or (until and when > until):
                continue
        out.setdefault((p, sha), Target(p, sha, int(frames or 0), int(size or 0),
                                        int(mtime or 0)))
    return [out[k] for k in sorted(out)]


def _when(at: str | None) -> datetime | None:
    """A ledger ``committed_at`` (ISO 8601) as an aware datetime; naive means UTC."""
    if not at:
        return None
    when = datetime.fromisoformat(at)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def find(targets: list[Target], input_dir: str, archive: str | None
         ) -> tuple[list[Target], list[tuple[Target, str]]]:
    """(found, not found with why): ``locate`` as re-scoring does, then each target it could
    not place is ``changed`` when a file still lies at its path (in the input or the archive:
    other bytes) and ``missing`` otherwise. Found targets are checked by hash when read."""
    found, lost = locate(targets, input_dir, archive)
    inp = Location(input_dir)
    local_archive = archive if archive and not is_remote(archive) else None

    def why(t: Target) -> str:
        there = inp.exists(t.path) or bool(local_archive and Path(local_archive, t.path).is_file())
        return "changed" if there else "missing"

    return found, [(t, why(t)) for t in lost]


def read_found(target: Target, max_frames_per_file: int = 4096
               ) -> tuple[str, np.ndarray | None]:
    """(outcome, frames): the located file read once through the validator, its frames
    (float32 [n, 17, 64, 48]) only when its bytes hash to the recorded content. Outcomes:
    ``found``, ``changed``, ``rejected``, ``missing`` (gone since located), ``unreadable``."""
    out, frames = read_input(Location(target.base), target.rel, max_frames_per_file)
    if out.skipped:
        return ("missing" if out.skipped == "vanished" else "unreadable"), None
    if out.sha256 != target.sha256:
        return "changed", None
    if frames is None:
        return "rejected", None
    return "found", frames


def excluded(path: str, exclude: Collection[str]) -> bool:
    """Is ``path`` one of ``exclude`` or inside one of its folders (a batch)?"""
    return any(path == e or path.startswith(e.rstrip("/") + "/") for e in exclude)


# -- recent, unlabeled ----------------------------------------------------------------------
def recent_unlabeled(output_dir: str, input_dir: str, archive: str | None = None,
                     days: float = 7, max_frames: int = 4096, seed: int = 0,
                     now: datetime | None = None, *, max_frames_per_file: int = 4096,
                     exclude: Collection[str] = ()) -> UnlabeledFrames:
    """At most ``max_frames`` frames, sampled at random from the files classified in the
    ``days`` before ``now`` (default: now, UTC), as the model met them.

    Why sample files first, then frames: reading every file of a week to keep a few thousand
    frames would cost a week of reads; shuffling the files (seeded) and reading them in that
    order until ``max_frames`` frames are in hand reads about what is kept, and a last
    uniform draw among those frames keeps the sample within bound. The same ledger, files
    and ``seed`` give the same sample. Memory: the frames kept plus at most one file's.

    ``archive``: default the output's remembered ``--move-processed`` folder.
    ``max_frames_per_file``: the validator's bound (``POSEBATCH_MAX_FRAMES_PER_FILE``).
    ``exclude``: batches or file paths to leave out, e.g. the labeled feedback held out for
    the gate (``tasks.adapt.feedback.holdout_keys``), so a test frame is never adapted to."""
    if max_frames < 0 or days < 0:
        raise ValueError("max_frames and days must not be negative")
    now = now or datetime.now(UTC)
    archive = archive or known_archive(output_dir)
    window = [t for t in classified_files(Ledger.load(output_dir).entries,
                                          since=now - timedelta(days=days), until=now)
              if not excluded(t.path, exclude)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(window))
    found, lost = find(window, input_dir, archive)
    where = {(t.path, t.sha256): t for t in found}
    why = {(t.path, t.sha256): w for t, w in lost}
    tally = Tally()
    taken: list[tuple[Target, np.ndarray]] = []
    total = 0
    for i in order.tolist():
        if total >= max_frames:
            break
        key = (window[i].path, window[i].sha256)
        outcome, frames = (why[key], None) if key in why else read_found(
            where[key], max_frames_per_file)
        tally.add(outcome, key[0])
        if frames is not None:
            taken.append((window[i], frames))
            total += len(frames)
    return _draw(taken, max_frames, rng, len(window), tally)


def _draw(taken: list[tuple[Target, np.ndarray]], max_frames: int, rng: np.random.Generator,
          window_files: int, tally: Tally) -> UnlabeledFrames:
    """At most ``max_frames`` of the frames read, drawn uniformly, in (path, frame) order."""
    taken.sort(key=lambda tf: (tf[0].path, tf[0].sha256))
    total = sum(len(f) for _, f in taken)
    pick = np.sort(rng.choice(total, size=min(total, max_frames), replace=False))
    out = np.empty((len(pick), *HEATMAP_SHAPE), np.float32)
    paths: list[str] = []
    shas: list[str] = []
    index = np.empty(len(pick), np.int32)
    start = pos = 0
    taken.reverse()
    while taken:
        t, frames = taken.pop()      # the list lets go of each file's buffer once copied
        mine = pick[(pick >= start) & (pick < start + len(frames))] - start
        out[pos:pos + len(mine)] = frames[mine]
        index[pos:pos + len(mine)] = mine
        paths += [t.path] * len(mine)
        shas += [t.sha256] * len(mine)
        start += len(frames)
        pos += len(mine)
    return UnlabeledFrames(out, paths, index, shas, window_files, tally)
