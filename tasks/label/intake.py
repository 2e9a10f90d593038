"""Labels coming back from people: recorded through the one feedback store, and, for teams
that keep training data as folders, mirrored into the labeled folder (no Prefect).

One store, one owner: labels are matched and written by ``tasks.monitor.feedback`` (the
store ``posebatch feedback`` writes, ``monitor`` reads for realized accuracy and ``retrain``
learns from). Importing the same file twice records nothing twice.

The folder mirror is ``LABELED/<class>/feedback/<batch>/<sha12>_f<frame>.npy``, one frame a
file, for every label in the store (the latest label of a frame wins, so a relabeled frame
moves to its new class folder and leaves the old one). ``retrain`` with feedback on skips
those folders (the store is used instead, with its held-out share), so a frame is never
counted twice nor trained on while it is held out for the gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks.monitor.feedback import match_labels, read_feedback, record_feedback

FOLDER = "feedback"     # LABELED/<class>/feedback/...: the mirror's own sub-folder


def import_labels(labels: pa.Table, predictions: pa.Table, class_names: Sequence[str],
                  output_dir: str) -> dict[str, Any]:
    """Match ``labels`` (``tasks.label.sheet.read_labels``) with the predictions by path,
    frame and content, record the matches, and count what could not be used."""
    res = match_labels(labels, predictions, class_names)
    path, new = (record_feedback(output_dir, res["matched"]) if res["matched"].num_rows
                 else (None, False))
    return {"rows": labels.num_rows, "matched_frames": res["matched"].num_rows,
            "recorded": new, "path": path,
            "unknown_class_rows": res["rejected_rows"], "unknown_class": res["rejected"],
            "unmatched_rows": res["unmatched_rows"], "unmatched": res["unmatched"],
            "changed_rows": res["changed_rows"], "changed": res["changed"]}


def mirror_name(sha: str, frame: int) -> str:
    return f"{sha[:12]}_f{int(frame)}"


def materialise_feedback(output_dir: str, input_dir: str, labeled_dir: Path,
                         class_names: Sequence[str], archive: str | None = None,
                         max_frames_per_file: int = 4096) -> dict[str, Any]:
    """Make ``labeled_dir/*/feedback`` hold exactly the store's labeled frames: write the
    missing ones (read by content hash, as retraining reads them), remove those whose label
    changed or that left the store. Returns the counts and the files it could not read."""
    from tasks.adapt.sources import materialise
    from tasks.classify.discover import batch_of
    from tasks.label.pool import frames_of, of_classes

    fb = of_classes(read_feedback(output_dir), class_names)
    want = {}
    for p, f, s, t in zip(*(fb[c].to_pylist() for c in ("source_path", "frame_index",
                                                        "content_sha256", "true_label")),
                          strict=True):
        rel = Path(t, FOLDER, batch_of(p) or "_root", mirror_name(s, f) + ".npy")
        want[rel.as_posix()] = (p, f, s, t)
    have = {q.relative_to(labeled_dir).as_posix() for q in labeled_dir.glob(f"*/{FOLDER}/**/*.npy")}
    for stale in sorted(have - set(want)):
        (labeled_dir / stale).unlink()
    todo = sorted(set(want) - have)
    rows = pa.table({"source_path": [want[r][0] for r in todo],
                     "frame_index": pa.array([want[r][1] for r in todo], pa.int32()),
                     "content_sha256": [want[r][2] for r in todo]})
    frames = frames_of(rows, output_dir, input_dir, archive, max_frames_per_file)
    unread = [want[r][0] for r, x in zip(todo, frames, strict=True) if x is None]
    ok = [(r, x) for r, x in zip(todo, frames, strict=True) if x is not None]
    for rel, frame in ok:
        p, f, s, t = want[rel]
        materialise(labeled_dir, frame[None], [class_names.index(t)], list(class_names),
                    [str(Path(rel).parent.relative_to(t))], [mirror_name(s, f)])
    return {"folder": str(labeled_dir), "frames": len(want), "written": len(ok),
            "removed": len(have - set(want)), "unreadable_frames": len(unread),
            "unreadable": sorted(set(unread))[:20]}


def without_mirror(scan: Any) -> tuple[Any, int]:
    """The labeled folder's scan without the mirror's files (``<class>/feedback/...``),
    and how many there were: ``retrain`` with feedback on reads those labels from the
    store, where its held-out share is kept apart."""
    import dataclasses

    keep = [f for f in scan.files if Path(f.file.rel).parts[1:2] != (FOLDER,)]
    return dataclasses.replace(scan, files=keep), len(scan.files) - len(keep)
