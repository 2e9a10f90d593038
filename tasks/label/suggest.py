"""`label suggest` as one plain function: pool, pick, draw, write (no Prefect).

The steps have their owners: the pool of unlabeled classified frames (``pool``), the
strategy (``select``), the pictures (``tasks.read.viewer``, as ``posebatch show`` draws
them) and the labeling folder (``sheet``). This module only puts them in order and says
what it did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.label import select
from tasks.label.pool import build_pool, frames_of, keys_of, of_classes
from tasks.label.sheet import write_sheet
from tasks.monitor.feedback import read_feedback

MAX_LABELED_FOR_COVER = 5000   # labeled frames read to mark covered clusters (a sample)


def labeled_features(feedback: pa.Table, output_dir: str, input_dir: str,
                     seed: int = 0) -> np.ndarray:
    """Keypoint features of frames labeled already (a sample of ``feedback``), for
    ``typical``'s cover."""
    from models.keypoints import keypoint_features

    if feedback.num_rows > MAX_LABELED_FOR_COVER:
        idx = np.random.default_rng(seed).choice(feedback.num_rows, MAX_LABELED_FOR_COVER,
                                                 False)
        feedback = feedback.take(pa.array(np.sort(idx)))
    frames = [f for f in frames_of(feedback, output_dir, input_dir) if f is not None]
    return keypoint_features(np.stack(frames)) if frames else np.zeros((0, 51), np.float32)


def choose(features: np.ndarray, probs: np.ndarray, n: int, strategy: str,
           labeled: np.ndarray, n_classes: int, seed: int = 0) -> tuple[str, np.ndarray]:
    """(the strategy used, indices into the pool's rows of the picks). ``features`` and
    ``probs``: the pool's keypoint features and model probabilities; ``labeled``: the
    keypoint features of frames labeled already."""
    used = select.resolve(strategy, len(labeled), n_classes)
    emb = select.embedding(features, labeled)
    picks = select.pick(used, emb[:len(features)], probs, n,
                        labeled_emb=emb[len(features):], seed=seed)
    return used, picks


def top3(probs: np.ndarray, class_names: Sequence[str]) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:3]
    return [(str(class_names[i]), float(probs[i])) for i in order]


def suggest(preds: pa.Table, output_dir: str, input_dir: str, folder: Path, *, n: int,
            strategy: str, class_names: Sequence[str], pool_size: int = 5000, seed: int = 0,
            image_url_prefix: str = "", say: Callable[[str], None] | None = None,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Pick ``n`` frames of ``preds`` worth labeling and write the labeling folder."""
    from tasks.read.viewer import render_frame

    say = say or (lambda m: None)
    feedback = read_feedback(output_dir)              # read once: what to skip, what covers
    pool = build_pool(preds, keys_of(feedback), output_dir, input_dir, size=pool_size,
                      seed=seed, progress=progress)
    say(f"{pool.eligible} classified frames, {pool.already_labeled} labeled already; "
        f"choosing from {len(pool)}")
    labeled = labeled_features(of_classes(feedback, class_names), output_dir, input_dir, seed)
    used, picks = choose(pool.features, pool.probs, n, strategy, labeled, len(class_names),
                         seed)
    rows = pool.rows.take(pa.array(picks, pa.int64()))
    frames = frames_of(rows, output_dir, input_dir)
    out_rows, pngs = [], []
    for k, (row, frame) in enumerate(zip(rows.to_pylist(), frames, strict=True)):
        if frame is None:        # gone since the pool read it: named by the pool's tally
            continue
        p = pool.probs[int(picks[k])]
        pngs.append(render_frame(frame, f"{row['source_path']} frame {row['frame_index']}",
                                 top3(p, class_names)))
        out_rows.append({**row, "predicted": row["label"]})
    files = write_sheet(folder, out_rows, pngs, class_names, image_url_prefix)
    return {"folder": str(folder), "strategy": strategy, "used": used, "picked": len(out_rows),
            "requested": n, "eligible_frames": pool.eligible,
            "already_labeled": pool.already_labeled, "pool_frames": len(pool),
            "labeled_for_cover": int(len(labeled)), "pool_files": asdict(pool.files),
            "picks": [{k: r[k] for k in ("source_path", "frame_index", "content_sha256",
                                         "predicted", "confidence")} for r in out_rows],
            **files}
