"""One training set from several labeled sources: the user's folder, our synthetic frames and
the labels fed back, each kept apart where it matters.

Why apart: the user's frames are the target domain, so they alone decide validation and test
when there are any (a score on our own renderer says little about theirs); synthetic frames
only ever train (and validate, beside the user's, so early stopping and the temperature see
both); feedback frames held out for the gate never appear here at all.

Every source arrives as a ``Scan`` of a labeled folder (the synthetic cache and the
materialised feedback are labeled folders too), so the rest of training streams, validates
and featurises them like any other file. Groups are prefixed with their source, so a person
of ours can never share a group with a person of theirs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.train.dataset import (
    LabeledFile,
    Scan,
    ScannedFile,
    Split,
    class_distribution,
    split_scan,
)

MIX_SHARE = 0.4  # mixed: the user's frames are repeated until they are about this share


@dataclass
class TrainingSet:
    """The merged files, the split the flow trains and judges on, and where each came from."""

    scan: Scan
    split: Split
    origin: list[str]                          # per file: "user", "feedback" or "synthetic"
    synthetic: dict[str, list[int]] = field(default_factory=dict)  # its train/val/test
    target_val: list[int] = field(default_factory=list)   # the user's validation files

    def idx(self, origin: str) -> list[int]:
        return [i for i, o in enumerate(self.origin) if o == origin]

    def frames_per_class(self, origins: tuple[str, ...] = ("user", "feedback")) -> list[int]:
        idx = [i for i, o in enumerate(self.origin) if o in origins]
        return list(class_distribution(self.scan, idx).values())


def merge_scans(parts: list[tuple[str, Scan]], class_names: list[str]) -> tuple[Scan, list[str]]:
    """One scan over ``class_names`` from several: labels re-indexed by class name (files of
    other classes left out), groups prefixed with the source's name."""
    index = {c: i for i, c in enumerate(class_names)}
    files: list[ScannedFile] = []
    origin: list[str] = []
    rejected: list[dict[str, str]] = []
    ignored: list[str] = []
    for name, scan in parts:
        rejected += [{**r, "path": f"{name}:{r['path']}"} for r in scan.rejected]
        ignored += [f"{name}:{p}" for p in scan.ignored]
        for f in scan.files:
            label = index.get(scan.class_names[f.file.label])
            if label is None:
                continue
            group = f"{name}:{f.file.group}" if f.file.group is not None else None
            lf = LabeledFile(f.file.path, f.file.rel if name == "user" else
                             f"{name}:{f.file.rel}", label, group)
            files.append(dataclasses.replace(f, file=lf))
            origin.append(name)
    return Scan(list(class_names), files, rejected, ignored), origin


def _sub_split(scan: Scan, idx: list[int], seed: int) -> Split:
    """``split_scan`` over a subset of the files, with indices into the whole scan."""
    if not idx:
        return Split([], [], [], method="none")
    sub = split_scan(scan.labels()[idx], [scan.files[i].file.group for i in idx],
                     len(scan.class_names), seed=seed)
    back = np.asarray(idx)
    return dataclasses.replace(sub, train=back[sub.train].tolist(), val=back[sub.val].tolist(),
                               test=back[sub.test].tolist())


def build_training_set(parts: list[tuple[str, Scan]], class_names: list[str], seed: int
                       ) -> TrainingSet:
    """Merge the sources and split them.

    The user's files are split by group as always; feedback files (their training share)
    only train; synthetic files are split by person on their own. Validation is the user's
    plus the synthetic one; the test split is the user's, or the synthetic one when the
    user has no labeled frames (then nothing judges the target domain, and the gate knows)."""
    scan, origin = merge_scans(parts, class_names)
    user = _sub_split(scan, [i for i, o in enumerate(origin) if o == "user"], seed)
    synth = _sub_split(scan, [i for i, o in enumerate(origin) if o == "synthetic"], seed)
    feedback = [i for i, o in enumerate(origin) if o == "feedback"]
    target = bool(user.train or user.val or user.test)
    base = user if target else synth
    split = Split(sorted(user.train + feedback), sorted(user.val + synth.val),
                  list(base.test), method=base.method, note=base.note,
                  groups={side: base.groups.get(side, []) + synth.groups.get(side, [])
                          for side in ("train", "val", "test")} if target else synth.groups)
    return TrainingSet(scan, split, origin,
                       {"train": synth.train, "val": synth.val, "test": synth.test},
                       target_val=list(user.val))


def oversampled(user_train: list[int], synthetic_train: list[int], share: float = MIX_SHARE
                ) -> list[int]:
    """The mixed strategy's training files: all synthetic ones, and the user's repeated
    until they are about ``share`` of the files (at least once each). Repetition is the
    weighting: the augmenter draws every repeat anew."""
    if not user_train or not synthetic_train:
        return sorted(user_train + synthetic_train)
    want = share / (1 - share) * len(synthetic_train)
    repeat = max(1, round(want / len(user_train)))
    return sorted(synthetic_train + user_train * repeat)


def source_summary(ts: TrainingSet, decision: dict[str, Any], transfer: dict[str, Any],
                   labeled_dir: str) -> dict[str, Any]:
    """What the model was trained on, for its metadata and report: the source decision, the
    frames of each origin, the synthetic settings and what transfer did."""
    frames = {o: sum(ts.scan.files[i].n_frames for i in ts.idx(o))
              for o in ("user", "feedback", "synthetic")}
    return {**decision, "labeled_dir": labeled_dir, "user_frames": frames["user"],
            "user_frames_per_class_min": min(ts.frames_per_class(("user",)) or [0]),
            "feedback_train_frames": frames["feedback"],
            "synthetic_frames": frames["synthetic"], "transfer": transfer}


def materialise(root: Path | str, frames: np.ndarray, labels: np.ndarray,
                class_names: list[str], groups: list[str], names: list[str]) -> Path:
    """Write in-memory labeled frames as a labeled folder ``root/<class>/<group>/<name>.npy``
    (``[1,17,64,48]`` float32), so they scan and stream like any labeled file."""
    root = Path(root)
    for frame, label, group, name in zip(frames, labels, groups, names, strict=True):
        path = root / class_names[int(label)] / group / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(frame, np.float32)[None], allow_pickle=False)
    return root
