"""Per-joint statistics of the heatmaps a run classified, as a mergeable accumulator.

Why: a drop in accuracy under a new pose detector or camera shows first in the inputs
(lower or wider peaks, more joints missing, skeletons no person makes), before anyone has
labels. The statistics are counts on a fixed grid, so chunks classified on different
threads or Dask workers add up exactly (``merge``), memory stays a few kilobytes whatever
the run's size, and quantiles and binned distances can be read back from the counts.

Per joint: the peak height (the channel's maximum, as ``models.keypoints.decode`` finds
it), binned on ``HEIGHT_EDGES``; the peak width (the sigma of a Gaussian with the same
half-maximum area around the peak) averaged over joints with a peak; and how often the
joint has no peak (below ``models.ood.NO_PEAK``, the threshold the OOD check uses). Per
frame: whether the decoded skeleton is implausible (``models.ood.implausible_skeleton``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.keypoints import decode
from models.ood import NO_PEAK, implausible_skeleton
from models.spec import NUM_KEYPOINTS
from tasks.monitor.bins import grid_quantile, regroup

# Peak-height grid: 0.02 steps from 0 to 2, plus an underflow and an overflow bin.
HEIGHT_EDGES = np.round(np.linspace(0.0, 2.0, 101), 6)
WINDOW = 6                      # half-size (px) of the window the width is measured in
_HALF_MAX_AREA = 2 * np.pi * np.log(2)  # area above half maximum = this * sigma**2
QUANTILES = (0.1, 0.5, 0.9)
_LOWER = np.concatenate([[-np.inf], HEIGHT_EDGES])       # each bin's lower edge
_QUANTILE_EDGES = np.concatenate([HEIGHT_EDGES[:1], HEIGHT_EDGES, HEIGHT_EDGES[-1:]])


def peak_widths(frames: np.ndarray, xy: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``[N, 17]`` peak sigma (px) from the number of pixels at or above half the peak in a
    window around it: only the peak itself counts, not a spurious blob elsewhere."""
    n, k, h, w = frames.shape
    y = np.rint(xy[..., 1]).astype(int)
    x = np.rint(xy[..., 0]).astype(int)
    offsets = np.arange(-WINDOW, WINDOW + 1)
    yy = y[..., None, None] + offsets[:, None]
    xx = x[..., None, None] + offsets[None, :]
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    ni = np.arange(n)[:, None, None, None]
    ki = np.arange(k)[None, :, None, None]
    vals = frames[ni, ki, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
    area = ((vals >= 0.5 * score[..., None, None]) & inside).sum(axis=(2, 3))
    return np.sqrt(area / _HALF_MAX_AREA)


def _zeros_counts() -> np.ndarray:
    return np.zeros((NUM_KEYPOINTS, len(HEIGHT_EDGES) + 1), np.int64)


@dataclass
class InputStats:
    """Counts over the frames added so far (``add``); ``merge`` adds another's counts."""

    frames: int = 0
    implausible: int = 0
    height_counts: np.ndarray = field(default_factory=_zeros_counts)
    width_sum: np.ndarray = field(default_factory=lambda: np.zeros(NUM_KEYPOINTS))
    present: np.ndarray = field(default_factory=lambda: np.zeros(NUM_KEYPOINTS, np.int64))
    width_n: np.ndarray = field(default_factory=lambda: np.zeros(NUM_KEYPOINTS, np.int64))

    def add(self, frames: np.ndarray, decoded: tuple[np.ndarray, np.ndarray] | None = None,
            width_every: int = 1) -> InputStats:
        """Count a batch of frames ``[N, 17, 64, 48]`` (or one frame ``[17, 64, 48]``).

        ``decoded``: the batch's ``decode`` output when the caller has it already (the
        classifier's OOD check decodes the same batch). ``width_every``: measure peak widths
        on every n-th frame only; the window gather is the costly part, and a mean width
        needs a sample, not every frame (heights and missing joints still count every frame).
        """
        frames = np.asarray(frames, dtype=np.float32)
        frames = frames[None] if frames.ndim == 3 else frames
        if not len(frames):
            return self
        xy, score = decode(frames) if decoded is None else decoded
        bins = np.searchsorted(HEIGHT_EDGES, score, side="right")  # 0: below 0
        for j in range(NUM_KEYPOINTS):
            self.height_counts[j] += np.bincount(bins[:, j], minlength=len(HEIGHT_EDGES) + 1)
        has_peak = score >= NO_PEAK
        k = max(1, int(width_every))
        widths = peak_widths(frames[::k], xy[::k], score[::k])
        self.width_sum += np.where(has_peak[::k], widths, 0.0).sum(axis=0)
        self.width_n += has_peak[::k].sum(axis=0)
        self.present += has_peak.sum(axis=0)
        self.implausible += int(implausible_skeleton(xy, score).sum())
        self.frames += len(frames)
        return self

    def add_stream(self, frames: Iterable[np.ndarray], batch: int = 256) -> InputStats:
        """Count frames one at a time from an iterator, ``batch`` at a time in memory."""
        buf: list[np.ndarray] = []
        for frame in frames:
            buf.append(np.asarray(frame))
            if len(buf) == batch:
                self.add(np.stack(buf))
                buf = []
        if buf:
            self.add(np.stack(buf))
        return self

    def merge(self, other: InputStats) -> InputStats:
        """A new accumulator holding both (chunks from threads or workers)."""
        return InputStats(self.frames + other.frames, self.implausible + other.implausible,
                          self.height_counts + other.height_counts,
                          self.width_sum + other.width_sum, self.present + other.present,
                          self.width_n + other.width_n)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able counts (what crosses a process boundary or is stored)."""
        return {"frames": self.frames, "implausible": self.implausible,
                "height_counts": self.height_counts.tolist(),
                "width_sum": self.width_sum.tolist(), "present": self.present.tolist(),
                "width_n": self.width_n.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputStats:
        return cls(int(d["frames"]), int(d["implausible"]),
                   np.asarray(d["height_counts"], np.int64),
                   np.asarray(d["width_sum"], np.float64), np.asarray(d["present"], np.int64),
                   np.asarray(d.get("width_n", d["present"]), np.int64))

    def summary(self) -> dict[str, Any]:
        """Per joint (COCO order): height quantiles ``QUANTILES``, mean width of the joints
        with a peak, missing rate; and the implausible-skeleton share. NaN with no frames."""
        n = self.frames
        quant = np.array([[height_quantile(c, q) for q in QUANTILES]
                          for c in self.height_counts]) if n else np.full(
            (NUM_KEYPOINTS, len(QUANTILES)), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            width = np.where(self.width_n > 0, self.width_sum / self.width_n, np.nan)
            missing = 1.0 - self.present / n if n else np.full(NUM_KEYPOINTS, np.nan)
        return {"frames": self.frames,
                **{f"height_p{round(q * 100)}": quant[:, i].tolist()
                   for i, q in enumerate(QUANTILES)},
                "width_mean": width.tolist(), "missing_rate": np.asarray(missing).tolist(),
                "implausible_share": self.implausible / n if n else float("nan")}


def height_quantile(counts: np.ndarray, q: float) -> float:
    """The ``q`` quantile of peak heights counted on ``HEIGHT_EDGES`` (the underflow bin reads
    as 0, the overflow bin as the last edge)."""
    return grid_quantile(counts, _QUANTILE_EDGES, q)


def height_bins(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Height counts (``[..., B+1]``) summed into the bins of coarser ``edges`` (a subset of
    ``HEIGHT_EDGES``)."""
    return regroup(counts, _LOWER, edges)
