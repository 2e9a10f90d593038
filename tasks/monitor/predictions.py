"""What a run's predictions add to its monitoring row, as a mergeable accumulator.

Why an accumulator: the flow commits predictions chunk by chunk and keeps only slim
columns in memory (``tasks.classify.run_summary.RunFrames``); the label-free estimate needs
every frame's probabilities. Folding each chunk's table into counts as it is committed
keeps a run's memory at ``[C, C]`` plus a few hundred numbers, and gives the same result
as one pass over the whole table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.ood import CODES as OOD_CODES
from tasks.monitor.bins import grid_quantile, regroup
from tasks.monitor.estimate import expected_confusion

# Confidence grid for quantiles: 0.005 steps on [0, 1] (the last bin holds 1.0 itself).
CONFIDENCE_GRID = np.round(np.linspace(0.0, 1.0, 201), 6)
CONFIDENCE_QUANTILES = (0.05, 0.25, 0.5)


def _zeros_grid() -> np.ndarray:
    return np.zeros(len(CONFIDENCE_GRID) - 1, np.int64)


@dataclass
class PredictionStats:
    """Counts over the predictions added so far (``add``), in model class order."""

    class_names: list[str]
    low_confidence: float = 0.5
    frames: int = 0
    low: int = 0
    ood: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    confusion: np.ndarray | None = None
    confidence_counts: np.ndarray = field(default_factory=_zeros_grid)

    def add(self, table: pa.Table | None) -> PredictionStats:
        """Fold a predictions table (``tasks.io.schema.PREDICTIONS_SCHEMA`` columns
        ``label``, ``confidence``, ``probabilities``, ``warnings``) into the counts."""
        if table is None or table.num_rows == 0:
            return self
        conf = table.column("confidence").to_numpy().astype(np.float64)
        probs = probabilities(table, len(self.class_names))
        cm = expected_confusion(probs)
        self.confusion = cm if self.confusion is None else self.confusion + cm
        self.labels.update(Counter(table.column("label").to_pylist()))
        self.low += int((conf < self.low_confidence).sum())
        self.ood += ood_frames(table)
        bins = np.clip(np.searchsorted(CONFIDENCE_GRID, conf, side="right") - 1, 0,
                       len(CONFIDENCE_GRID) - 2)
        self.confidence_counts += np.bincount(bins, minlength=len(CONFIDENCE_GRID) - 1)
        self.frames += table.num_rows
        return self

    def merge(self, other: PredictionStats) -> PredictionStats:
        """Fold another accumulator in (a chunk counted on a Dask worker)."""
        if other.confusion is not None:
            self.confusion = other.confusion.copy() if self.confusion is None \
                else self.confusion + other.confusion
        self.labels.update(other.labels)
        self.low += other.low
        self.ood += other.ood
        self.confidence_counts = self.confidence_counts + other.confidence_counts
        self.frames += other.frames
        return self

    def add_probabilities(self, probs: np.ndarray) -> PredictionStats:
        """Fold calibrated ``[N, C]`` probabilities in (frames without a predictions table,
        e.g. a retrain's test split): labels and confidences are their top-1."""
        probs = np.asarray(probs, np.float64)
        if not len(probs):
            return self
        top = probs.argmax(axis=1)
        n, c = probs.shape
        offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32))
        return self.add(pa.table({
            "label": pa.array(np.array(self.class_names, dtype=object)[top], pa.string()),
            "confidence": pa.array(probs[np.arange(n), top].astype(np.float32)),
            "probabilities": pa.ListArray.from_arrays(offsets, pa.array(probs.ravel(),
                                                                         pa.float32())),
        }))

    def confidence_quantiles(self, qs: Sequence[float] = CONFIDENCE_QUANTILES
                             ) -> list[float]:
        """Quantiles read from the grid counts (linear within a 0.005 bin)."""
        return [grid_quantile(self.confidence_counts, CONFIDENCE_GRID, q) for q in qs]

    def binned(self, edges: Sequence[float]) -> np.ndarray:
        """Confidence counts in the bins of ``edges`` (each edge on the 0.005 grid)."""
        return regroup(self.confidence_counts, CONFIDENCE_GRID[:-1], np.asarray(edges))

    def summary(self) -> dict[str, Any]:
        n = self.frames
        return {"frames": n, "low_confidence_share": self.low / n if n else float("nan"),
                "ood_share": self.ood / n if n else float("nan"),
                "labels": dict(self.labels)}


def probabilities(table: pa.Table, n_classes: int) -> np.ndarray:
    """The ``probabilities`` list column as ``[N, C]`` float64."""
    flat = pc.list_flatten(table.column("probabilities")).to_numpy(zero_copy_only=False)
    return flat.astype(np.float64).reshape(table.num_rows, n_classes)


def ood_frames(table: pa.Table) -> int:
    """Frames with any out-of-distribution warning (``models.ood.CODES``)."""
    if "warnings" not in table.column_names:
        return 0
    return sum(1 for codes in table.column("warnings").to_pylist()
               if codes and any(c in OOD_CODES for c in codes))
