"""Everything ``retrain`` learns from, gathered in one place: the labeled folder, the labels
fed back (a training share and a held-out share), our synthetic frames when the folder is
small, and the unlabeled production stream.

Plain functions over folders and the output (no Prefect); ``flows/retrain.py`` calls them
as tasks. Each returns what it used, for the model's metadata and the report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.spec import HEATMAP_SHAPE
from tasks.adapt.sources import TrainingSet, build_training_set, materialise
from tasks.adapt.synthetic import choose_source, synthetic_folder, synthetic_settings
from tasks.train.dataset import Scan, class_distribution, scan_labeled

UNLABELED_CHOICES = ("auto", "none")  # or a local folder of .npy files
MIN_UNLABELED = 200   # fewer frames than this give no useful batch-norm statistics
FEEDBACK_HOLDOUT = 0.3


@dataclass
class Feedback:
    """The labels fed back: a training share (as a scan) and the held-out target test set."""

    train: Scan | None = None
    test_frames: np.ndarray = field(default_factory=lambda: np.zeros((0, *HEATMAP_SHAPE),
                                                                     np.float32))
    test_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    summary: dict[str, Any] = field(default_factory=dict)
    heldout_paths: list[str] = field(default_factory=list)  # never adapted to either


def check_unlabeled(value: str) -> None:
    """``auto``, ``none`` or a local folder; anything else is refused in one line."""
    if value in UNLABELED_CHOICES:
        return
    if "://" in value:
        raise ValueError(f"--unlabeled {value}: only a local folder, auto or none is supported")
    if not Path(value).is_dir():
        raise ValueError(f"--unlabeled {value}: no such folder")


def gather_feedback(output_dir: str, input_dir: str, class_names: list[str], cache_root: Path,
                    max_frames: int, keep: list[str] | tuple[str, ...] = ()) -> Feedback:
    """The frames labeled through ``posebatch feedback``, found by content hash in the input
    or the archive. A share grouped by batch, then by file (``holdout_split``, with a fixed
    seed: the held-out frames must not change with ``--seed``) is held out as the gate's
    target-domain test set and never trained on; ``keep``: the keys the last model held out
    (its metadata), held out again whatever arrived since. The rest is written as a labeled
    folder under the cache and scanned like one."""
    from dataclasses import asdict

    from tasks.adapt.feedback import feedback_frames, holdout_keys, holdout_split

    found = feedback_frames(output_dir, input_dir, class_names, max_frames_per_file=max_frames)
    summary: dict[str, Any] = {"used": True, "recorded": found.recorded,
                               "unknown_class": found.unknown_class,
                               "unknown_labels": found.unknown_labels,
                               "frames": asdict(found.tally)}
    if not len(found.labels):
        return Feedback(summary=summary)
    train, test = holdout_split(found.batch, found.source_path, FEEDBACK_HOLDOUT, 0, keep)
    held = sorted(holdout_keys(found.batch, found.source_path, FEEDBACK_HOLDOUT, 0, keep))
    summary.update(train_frames=len(train), heldout_frames=len(test), holdout_keys=held)
    fb = Feedback(test_frames=found.frames[test], test_labels=found.labels[test],
                  summary=summary, heldout_paths=sorted({found.source_path[i] for i in test}))
    if len(train):
        names = [f"{found.content_sha256[i][:16]}_f{int(found.frame_index[i])}" for i in train]
        digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:12]
        groups = [found.batch[i] or "_root" for i in train]
        root = materialise(cache_root / "feedback" / digest, found.frames[train],
                           found.labels[train], class_names, groups, names)
        fb.train = scan_labeled(root, "subject", max_frames)
    return fb


def gather_training_set(scan: Scan, labeled_dir: str, feedback: Feedback, *, source: str,
                        cache_root: Path, seed: int, max_frames: int, transfer_below: int,
                        synthetic_per_class: int = 150, say: Any = None
                        ) -> tuple[TrainingSet, dict[str, Any]]:
    """The merged training set and the source decision (``tasks/adapt/synthetic.py``)."""
    from models.spec import class_names as spec_names

    names = scan.class_names or spec_names()
    per_class = list(class_distribution(scan, range(len(scan.files))).values()) or [0]
    chosen, why = choose_source(source, names, per_class, transfer_below)
    parts: list[tuple[str, Scan]] = [("user", scan)]
    if feedback.train is not None:
        parts.append(("feedback", feedback.train))
    settings = synthetic_settings(synthetic_per_class)
    if chosen == "synthetic":
        (say or (lambda m: None))(f"synthetic source: {why}")
        parts.append(("synthetic", scan_labeled(synthetic_folder(cache_root, settings),
                                                "subject", max_frames)))
    elif not scan.files:
        raise ValueError(f"{labeled_dir}: no labeled frames, and --source none")
    ts = build_training_set(parts, names, seed)
    return ts, {"source": chosen, "why": why, "synthetic_settings": settings
                if chosen == "synthetic" else None}


def unlabeled_frames(value: str, output_dir: str, input_dir: str, days: float,
                     max_frames: int, seed: int, exclude: list[str] | tuple[str, ...] = (),
                     max_frames_per_file: int = 4096
                     ) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The unlabeled target frames ``--unlabeled`` asks for (None: no adaptation, and why).
    ``exclude``: files held out for the gate, which adaptation must not see either;
    ``max_frames_per_file``: the validator's bound, as classify applies it."""
    if value == "none":
        return None, {"used": False, "why": "--unlabeled none"}
    if value == "auto":
        from dataclasses import asdict

        from tasks.adapt.stream import recent_unlabeled
        from tasks.classify.archive import known_archive
        from tasks.classify.ledger import Ledger

        if Ledger.load(output_dir).entries.num_rows == 0:
            return None, {"used": False, "why": f"nothing classified yet in {output_dir}"}
        got = recent_unlabeled(output_dir, input_dir, known_archive(output_dir), days=days,
                               max_frames=max_frames, seed=seed, exclude=exclude,
                               max_frames_per_file=max_frames_per_file)
        frames, info = got.frames, {"from": f"classified in the last {days:g} day(s)",
                                    "window_files": got.window_files,
                                    "files": asdict(got.files)}
    else:
        frames = _folder_frames(Path(value), max_frames, seed, max_frames_per_file)
        info = {"from": value}
    info["frames"] = int(len(frames))
    if len(frames) < MIN_UNLABELED:
        return None, {**info, "used": False,
                      "why": f"{len(frames)} unlabeled frame(s), fewer than {MIN_UNLABELED}"}
    return frames, {**info, "used": True}


def _folder_frames(folder: Path, max_frames: int, seed: int, max_frames_per_file: int
                   ) -> np.ndarray:
    """Up to ``max_frames`` valid frames of a folder's ``.npy`` files (the validator decides;
    invalid files are skipped), a random sample of files for ``seed``."""
    from tasks.io.validate import Rejected, read_untrusted

    paths = sorted(folder.rglob("*.npy"))
    np.random.default_rng(seed).shuffle(paths)
    out: list[np.ndarray] = []
    total = 0
    for p in paths:
        with open(p, "rb") as fh:
            _, hm = read_untrusted(fh, max_frames_per_file)
        if isinstance(hm, Rejected):
            continue
        out.append(hm.frames)
        total += len(hm.frames)
        if total >= max_frames:
            break
    if not out:
        return np.zeros((0, *HEATMAP_SHAPE), np.float32)
    return np.concatenate(out)[:max_frames].astype(np.float32)
