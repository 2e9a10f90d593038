"""The labeled training set: listing, validation, grouping, the honest split, and streaming.

Labeled data is ``<labeled>/<class_name>/**/*.npy``; class names are the sorted folder names.
Every file goes through the shared validator (``tasks.io.validate``) once, in a scan that also
hashes its content (for the data fingerprint) and decodes keypoint features (small: 51 floats
a frame, kept for the scikit-learn methods). Heatmaps themselves are not kept: training
streams them from disk again with ``tf.data``, so a set larger than memory still trains.

Group rule (why: frames of one take are near-duplicates, and a split that puts them on both
sides measures memory, not generalisation):

- ``subject`` (default): the first sub-folder below the class folder is the group
  (``labeled/action_up/s03/t02_f004.npy`` -> ``s03``); a file directly in the class folder
  uses its file-name prefix up to the first ``_`` (``alice_001.npy`` -> ``alice``).
- ``prefix``: the take: the sub-folders plus the file-name prefix
  (``s03/t02_f004.npy`` -> ``s03/t02``). Finer groups, so a subject may be on two sides.
- ``none``: no groups; a stratified file split.

A group id does not include the class: a subject seen under several classes is on one side
for all of them. When no groups exist (every file is its own group) or there are too few for
three sides, the split falls back to a stratified file split and says so.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.keypoints import keypoint_features
from tasks.io.validate import Rejected, read_heatmap_file, read_untrusted
from tasks.train.choices import GROUP_RULES

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LabeledFile:
    """One labeled file: path, class index, group id (None when the rule gives none)."""

    path: Path
    rel: str
    label: int
    group: str | None


@dataclass
class ScannedFile:
    """A labeled file that passed validation: its frames' features and content hash."""

    file: LabeledFile
    sha256: str
    n_frames: int
    features: np.ndarray  # [n_frames, F] float32
    warnings: int = 0


@dataclass
class Scan:
    """The result of scanning a labeled folder."""

    class_names: list[str]
    files: list[ScannedFile]
    rejected: list[dict[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return sum(f.n_frames for f in self.files)

    def labels(self) -> np.ndarray:
        return np.array([f.file.label for f in self.files], dtype=np.int64)

    def groups(self) -> list[str | None]:
        return [f.file.group for f in self.files]


def group_of(rel_in_class: Path, rule: str) -> str | None:
    """The group id of a file given its path relative to its class folder."""
    if rule not in GROUP_RULES:
        raise ValueError(f"unknown group rule {rule!r}; use one of {', '.join(GROUP_RULES)}")
    if rule == "none":
        return None
    parts = rel_in_class.parts
    stem_prefix = rel_in_class.name.split("_", 1)[0] if "_" in rel_in_class.name else None
    if rule == "subject":
        if len(parts) > 1:
            return parts[0]
        return stem_prefix
    # prefix: the take = folders + file-name prefix
    if stem_prefix is None:
        return "/".join(parts[:-1]) or None
    return "/".join((*parts[:-1], stem_prefix))


def list_labeled(root: Path | str, group_by: str = "subject") -> tuple[list[str],
                                                                     list[LabeledFile],
                                                                     list[str]]:
    """List ``root/<class>/**/*.npy``: (class names, files, ignored paths), sorted, no reads.

    Hidden files and folders are skipped; files that are not ``.npy`` and files directly in
    ``root`` are listed as ignored (reported, never silently dropped).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"labeled folder {root} does not exist")
    classes: list[str] = []
    files: list[LabeledFile] = []
    ignored: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored.append(entry.name)
            continue
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(entry):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                p = Path(dirpath) / name
                if name.endswith(".npy"):
                    found.append(p)
                else:
                    ignored.append(p.relative_to(root).as_posix())
        if not found:
            continue
        label = len(classes)
        classes.append(entry.name)
        for p in found:
            files.append(LabeledFile(p, p.relative_to(root).as_posix(), label,
                                     group_of(p.relative_to(entry), group_by)))
    return classes, files, ignored


def scan_files(files: Sequence[LabeledFile], max_frames: int = 4096,
               progress: Callable[[int, int], None] | None = None) -> tuple[list[ScannedFile],
                                                                            list[dict[str, str]]]:
    """Validate, hash and featurise each file in one read; return (accepted, rejected)."""
    accepted: list[ScannedFile] = []
    rejected: list[dict[str, str]] = []
    step = max(200, len(files) // 10)  # about ten progress calls, none for tiny sets
    for i, lf in enumerate(files):
        try:
            with open(lf.path, "rb") as fh:
                sha, hm = read_untrusted(fh, max_frames)  # bounded, whatever the file's size
        except OSError as exc:
            rejected.append({"path": lf.rel, "reason": "read_error", "detail": str(exc)[:200]})
            continue
        if isinstance(hm, Rejected):
            rejected.append({"path": lf.rel, "reason": hm.reason, "detail": hm.detail})
            continue
        accepted.append(ScannedFile(lf, sha, len(hm.frames), keypoint_features(hm.frames),
                                    sum(1 for w in hm.warnings if w)))
        if progress is not None and (i + 1) % step == 0:
            progress(i + 1, len(files))
    return accepted, rejected


def scan_labeled(root: Path | str, group_by: str = "subject", max_frames: int = 4096,
                 progress: Callable[[int, int], None] | None = None) -> Scan:
    """List and scan a labeled folder. Classes whose every file was rejected are dropped."""
    classes, files, ignored = list_labeled(root, group_by)
    accepted, rejected = scan_files(files, max_frames, progress)
    present = sorted({f.file.label for f in accepted})
    if len(present) != len(classes):  # re-index: a class with no valid file cannot be learned
        remap = {old: new for new, old in enumerate(present)}
        accepted = [ScannedFile(LabeledFile(f.file.path, f.file.rel, remap[f.file.label],
                                            f.file.group), f.sha256, f.n_frames, f.features,
                                f.warnings) for f in accepted]
        classes = [classes[i] for i in present]
    return Scan(classes, accepted, rejected, ignored)


def data_fingerprint(scan: Scan) -> str:
    """sha256 over the sorted (content sha256, label name) pairs of the accepted files."""
    pairs = sorted((f.sha256, scan.class_names[f.file.label]) for f in scan.files)
    h = hashlib.sha256()
    for sha, label in pairs:
        h.update(f"{sha}\t{label}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# The split

@dataclass
class Split:
    """Indices into ``Scan.files`` per side, and how the split was made."""

    train: list[int]
    val: list[int]
    test: list[int]
    method: str  # "group" or "file"
    note: str = ""
    groups: dict[str, list[str]] = field(default_factory=dict)

    def side(self, name: str) -> list[int]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _assign(counts: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[int]:
    """Greedy stratified assignment of units (rows: per-class counts) to sides.

    Units go largest first (random tie-break), each to the side whose per-class totals move
    closest to their targets (squared error); every side gets at least one unit.
    """
    n_units, _ = counts.shape
    target = np.outer(np.asarray(fractions, dtype=float), counts.sum(axis=0))
    alloc = np.zeros_like(target)
    order = sorted(range(n_units), key=lambda u: (-counts[u].sum(), rng.random()))
    side_of = [0] * n_units
    for u in order:
        before = ((alloc - target) ** 2).sum(axis=1)
        after = ((alloc + counts[u] - target) ** 2).sum(axis=1)
        s = int(np.argmin(after - before))
        alloc[s] += counts[u]
        side_of[u] = s
    for s in range(len(fractions)):  # no empty side: take the smallest unit of the biggest side
        if s not in side_of:
            donor = max(range(len(fractions)), key=lambda d: side_of.count(d))
            u = min((u for u in range(n_units) if side_of[u] == donor),
                    key=lambda u: counts[u].sum())
            side_of[u] = s
    return side_of


def split_scan(labels: Sequence[int], groups: Sequence[str | None], n_classes: int,
               fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
               min_groups: int = 3) -> Split:
    """Split files into train/val/test by group, stratified by class.

    No group is on two sides. Falls back to a stratified file split (and says why) when
    files have no groups or there are fewer than ``min_groups`` distinct groups.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    known = [g for g in groups if g is not None]
    distinct = sorted(set(known))
    note = ""
    if len(known) == len(groups) and len(distinct) >= max(min_groups, 3):
        index = {g: i for i, g in enumerate(distinct)}
        counts = np.zeros((len(distinct), n_classes))
        for lab, g in zip(labels, groups, strict=True):
            counts[index[g], lab] += 1
        side_of_group = _assign(counts, fractions, rng)
        sides: list[list[int]] = [[], [], []]
        for i, g in enumerate(groups):
            sides[side_of_group[index[g]]].append(i)
        by_side = {name: sorted(g for g in distinct if side_of_group[index[g]] == s)
                   for s, name in enumerate(SPLITS)}
        return Split(*sides, method="group", note=note, groups=by_side)
    if not known:
        note = "no groups in the file layout: stratified file split (frames of one take may " \
               "be on two sides, so test scores can be optimistic)"
    elif len(known) < len(groups):
        note = "some files have no group: stratified file split"
    else:
        note = f"only {len(distinct)} group(s), fewer than {max(min_groups, 3)}: " \
               "stratified file split"
    sides = [[], [], []]
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = len(idx)
        n_test = int(round(fractions[2] * n)) if n >= 3 else 0
        n_val = int(round(fractions[1] * n)) if n >= 3 else 0
        n_test, n_val = max(n_test, 1 if n >= 3 else 0), max(n_val, 1 if n >= 3 else 0)
        sides[2].extend(idx[:n_test].tolist())
        sides[1].extend(idx[n_test:n_test + n_val].tolist())
        sides[0].extend(idx[n_test + n_val:].tolist())
    return Split(*(sorted(s) for s in sides), method="file", note=note)


# ---------------------------------------------------------------------------------------
# Arrays and streaming

def class_distribution(scan: Scan, idx: Sequence[int]) -> dict[str, int]:
    """Frames per class name (every class, zeros included) of the given files.

    Stored as ``class_distribution`` (training split) in the model's metadata: the drift
    report compares a run's predicted label mix with the mix the model was trained on."""
    counts = dict.fromkeys(scan.class_names, 0)
    for i in idx:
        f = scan.files[i]
        counts[scan.class_names[f.file.label]] += f.n_frames
    return counts


def features_of(scan: Scan, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint features and labels, one row per frame, of the given files."""
    feats = [scan.files[i].features for i in idx]
    labs = [np.full(scan.files[i].n_frames, scan.files[i].file.label) for i in idx]
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(feats), np.concatenate(labs).astype(np.int64)


def iter_frames(paths: Sequence[Path], labels: Sequence[int], max_frames: int = 4096,
                order_seed: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(frame [17,64,48] float32, label)`` by reading each file through the validator.

    ``order_seed`` shuffles the file order (a new order each time the iterator is created)."""
    order = np.arange(len(paths))
    if order_seed is not None:
        np.random.default_rng(order_seed).shuffle(order)
    for i in order:
        frames = read_heatmap_file(paths[i], max_frames).frames  # validated in the scan
        for frame in frames:
            yield frame, int(labels[i])


def load_frames(scan: Scan, idx: Sequence[int], max_frames: int = 4096
                ) -> tuple[np.ndarray, np.ndarray]:
    """All frames of the given files in memory (for evaluation of small sets and tests)."""
    paths = [scan.files[i].file.path for i in idx]
    labels = [scan.files[i].file.label for i in idx]
    xs, ys = [], []
    for x, y in iter_frames(paths, labels, max_frames):
        xs.append(x)
        ys.append(y)
    if not xs:
        return np.zeros((0, 17, 64, 48), np.float32), np.zeros(0, np.int64)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def make_tf_dataset(scan: Scan, idx: Sequence[int], batch_size: int, *, shuffle: bool = False,
                    seed: int = 0, augment: Callable[[Any], Any] | None = None,
                    cache: bool = False, max_frames: int = 4096) -> Any:
    """A ``tf.data.Dataset`` of ``(frames [B,17,64,48], labels [B])`` streamed from disk.

    Files are read (and validated) in a generator; ``cache=True`` keeps decoded frames in
    memory after the first pass (only for sets that fit). Without the cache the file order is
    shuffled per epoch and a bounded shuffle buffer mixes frames. ``augment`` maps the batched
    dataset (see ``tasks.train.augment.augment_dataset``).
    """
    import tensorflow as tf

    from models.spec import HEATMAP_SHAPE

    paths = [scan.files[i].file.path for i in idx]
    labels = [scan.files[i].file.label for i in idx]
    epoch = {"n": 0}

    def gen() -> Iterator[tuple[np.ndarray, int]]:
        order_seed = None
        if shuffle and not cache:
            order_seed = seed * 1000 + epoch["n"]
            epoch["n"] += 1
        yield from iter_frames(paths, labels, max_frames, order_seed)

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=(tf.TensorSpec(HEATMAP_SHAPE, tf.float32),
                               tf.TensorSpec((), tf.int32)))
    n_frames = sum(scan.files[i].n_frames for i in idx)
    # A generator's length is unknown to tf.data; stating it lets Keras count steps.
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_frames))
    if cache:
        ds = ds.cache()
    if shuffle:
        buffer = n_frames if cache else min(n_frames, 2048)
        ds = ds.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = augment(ds)
    return ds.prefetch(2)
