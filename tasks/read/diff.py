"""``posebatch diff``: how two model versions disagree on the frames both scored.

Pure pyarrow over prediction tables (``compare``) plus the read (``read_pair``) and the
default pair of versions (``default_pair``). Shared by ``posebatch diff`` and the report's
"Model versions" section, so the figures agree.

- **Frames compared**: those both versions scored (a frame is ``(source_path,
  content_sha256, frame_index)``); if a version scored a frame twice its latest row counts.
- **Agreement**: the share of those frames with the same label.
- **Flip matrix**: frames per (old label, new label); the diagonal is agreement.
- **Confidence shift**, per *old* label (the class the ``--from`` version gave the frame, so
  the groups do not depend on the new model): mean new confidence minus mean old confidence
  over those frames; each confidence is the version's confidence in its own label.
- **High-confidence flips**: frames whose label changed and whose new confidence is at
  least ``min_confidence``, most confident first: the ones worth a human look.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from models.spec import class_names
from tasks.read.query import (
    FRAME_KEY,
    QueryError,
    When,
    model_versions_in,
    pick_current,
    read_predictions,
    version_sort_key,
)

DIFF_COLUMNS = list(FRAME_KEY) + ["label", "confidence", "model_version", "classified_at"]
MIN_CONFIDENCE = 0.8
LIMIT = 20


def default_pair(versions: Sequence[str], production: str | None,
                 from_version: str | None = None,
                 to_version: str | None = None) -> tuple[str, str]:
    """``(from, to)``: ``to`` defaults to the production version when the data holds it,
    else the newest version found; ``from`` defaults to the version found just before
    ``to`` in version order (``v0002`` before ``v0003``). Raises ``QueryError``."""
    known = sorted(set(versions), key=version_sort_key)
    for flag, v in (("--from", from_version), ("--to", to_version)):
        if v is not None and v not in known:
            raise QueryError(f"{flag} {v}: no predictions of model version {v}; versions "
                             f"found are {', '.join(known) or 'none'}")
    if to_version is None:
        if len(known) < 2 and from_version is None:
            raise QueryError("diff needs predictions of two model versions; found "
                             f"{', '.join(known) or 'none'} (run `posebatch rescore` first)")
        to_version = production if production in known else known[-1]
        if to_version == from_version:
            others = [v for v in known if v != from_version]
            if not others:
                raise QueryError(f"only {from_version} has predictions: pass --to")
            to_version = others[-1]
    if from_version is None:
        before = [v for v in known if version_sort_key(v) < version_sort_key(to_version)]
        if not before:
            raise QueryError(f"no model version before {to_version} in the predictions "
                             f"(found {', '.join(known)}): pass --from")
        from_version = before[-1]
    if from_version == to_version:
        raise QueryError(f"--from and --to are both {to_version}: give two versions")
    return from_version, to_version


def read_pair(output: Path | str, from_version: str, to_version: str, *,
              since: When = None, until: When = None) -> tuple[pa.Table, pa.Table]:
    """Both versions' rows (``DIFF_COLUMNS``). ``since``/``until`` select frames by when the
    ``from`` version classified them (a re-scoring happens later, so filtering the ``to``
    rows by time would lose the frames it re-scored). One-line error if either has none."""
    old = read_predictions(output, model_version=from_version, since=since, until=until,
                           columns=DIFF_COLUMNS)
    if old.num_rows == 0:
        raise QueryError(f"model version {from_version} has no predictions"
                         + (" in the --since/--until range" if since or until else ""))
    new = read_predictions(output, model_version=to_version, columns=DIFF_COLUMNS)
    if new.num_rows == 0:
        raise QueryError(f"model version {to_version} has no predictions")
    return old, new


def _one_per_frame(table: pa.Table, prefix: str) -> pa.Table:
    t = pick_current(table.select(DIFF_COLUMNS))
    return pa.table({**{k: t.column(k) for k in FRAME_KEY},
                     f"{prefix}_label": t.column("label"),
                     f"{prefix}_confidence": pc.cast(t.column("confidence"), pa.float64())})


def compare(old: pa.Table, new: pa.Table, *, min_confidence: float = MIN_CONFIDENCE,
            limit: int | None = LIMIT) -> dict[str, Any]:
    """The diff of two versions' prediction tables (each needs ``DIFF_COLUMNS``), as a
    JSON-ready dict: ``from_version``, ``to_version``, ``frames`` (compared), ``only_from``,
    ``only_to``, ``agreement``, ``flipped``, ``labels`` and ``matrix`` (rows old, columns
    new), ``flips`` (off-diagonal cells, largest first), ``confidence_shift`` (per old
    label), ``min_confidence`` and ``high_confidence_flips`` (``total`` and up to ``limit``
    ``rows``)."""
    versions = [set(t.column("model_version").to_pylist()) for t in (old, new)]
    a, b = _one_per_frame(old, "old"), _one_per_frame(new, "new")
    both = a.join(b, keys=list(FRAME_KEY), join_type="inner")
    both = both.sort_by([(k, "ascending") for k in FRAME_KEY])
    n = both.num_rows
    from_v = ", ".join(sorted(versions[0]))
    to_v = ", ".join(sorted(versions[1]))
    if n == 0:
        raise QueryError(f"{from_v} and {to_v} scored no frame in common: nothing to compare")
    same = pc.equal(both.column("old_label"), both.column("new_label"))
    agree = int(pc.sum(same).as_py() or 0)
    seen = set(both.column("old_label").to_pylist()) | set(both.column("new_label").to_pylist())
    labels = [c for c in class_names() if c in seen] + sorted(seen - set(class_names()))
    pos = {lab: i for i, lab in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    cells = both.group_by(["old_label", "new_label"]).aggregate([("old_label", "count")])
    for r in cells.to_pylist():
        matrix[pos[r["old_label"]]][pos[r["new_label"]]] = r["old_label_count"]
    flips = sorted(({"old_label": labels[i], "new_label": labels[j], "frames": c}
                    for i, row in enumerate(matrix) for j, c in enumerate(row)
                    if i != j and c), key=lambda d: (-d["frames"], d["old_label"],
                                                     d["new_label"]))
    work = both.append_column("agree", pc.cast(same, pa.float64()))
    g = work.group_by(["old_label"]).aggregate([
        ("old_confidence", "mean"), ("new_confidence", "mean"), ("agree", "mean"),
        ("old_confidence", "count")])
    shift = sorted(({"label": r["old_label"], "frames": r["old_confidence_count"],
                     "mean_old_confidence": r["old_confidence_mean"],
                     "mean_new_confidence": r["new_confidence_mean"],
                     "shift": r["new_confidence_mean"] - r["old_confidence_mean"],
                     "agreement": r["agree_mean"]} for r in g.to_pylist()),
                   key=lambda d: pos[d["label"]])
    high = both.filter(pc.and_(pc.invert(same),
                               pc.greater_equal(both.column("new_confidence"),
                                                float(min_confidence))))
    high = high.sort_by([("new_confidence", "descending"), ("source_path", "ascending"),
                         ("frame_index", "ascending")])
    shown = high if limit is None else high.slice(0, max(limit, 0))
    return {
        "from_version": from_v, "to_version": to_v, "frames": n,
        "only_from": a.num_rows - n, "only_to": b.num_rows - n,
        "agreement": agree / n, "flipped": n - agree,
        "labels": labels, "matrix": matrix, "flips": flips,
        "confidence_shift": shift, "min_confidence": float(min_confidence),
        "high_confidence_flips": {"total": high.num_rows, "rows": shown.select(
            ["source_path", "frame_index", "old_label", "new_label", "old_confidence",
             "new_confidence", "content_sha256"]).to_pylist()},
    }


def diff_versions(output: Path | str, from_version: str | None = None,
                  to_version: str | None = None, *, production: str | None = None,
                  since: When = None, until: When = None,
                  min_confidence: float = MIN_CONFIDENCE,
                  limit: int | None = LIMIT) -> dict[str, Any]:
    """Read and compare: the defaults of ``default_pair``, the window of ``read_pair``."""
    from_version, to_version = default_pair(model_versions_in(output), production,
                                            from_version, to_version)
    old, new = read_pair(output, from_version, to_version, since=since, until=until)
    return compare(old, new, min_confidence=min_confidence, limit=limit)
