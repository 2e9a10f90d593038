"""The report's figures, drawn with matplotlib's object API (no pyplot global state, no GUI
backend), each returned as PNG bytes ready to embed."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DPI = 100


def _figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def png(fig: Any) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def frames_per_day(dates: Sequence[str], labels: Sequence[str],
                   counts: Mapping[tuple[str, str], int]) -> bytes:
    """Stacked bars: frames per day, split by label."""
    fig = _figure(10, 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(dates))
    bottom = np.zeros(len(dates))
    for label, color in zip(labels, _colors(len(labels)), strict=True):
        h = np.array([counts.get((d, label), 0) for d in dates], dtype=float)
        ax.bar(x, h, bottom=bottom, color=color, label=label, width=0.8)
        bottom += h
    ax.set_xticks(x, dates, rotation=45 if len(dates) > 6 else 0, ha="right"
                  if len(dates) > 6 else "center")
    ax.set_ylabel("frames")
    ax.set_title("Frames per day")
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png(fig)


def frames_per_label(labels: Sequence[str], frames: Sequence[int]) -> bytes:
    fig = _figure(8, 0.3 * len(labels) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    ax.barh(y, frames, color=_colors(len(labels)))
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("frames")
    ax.set_title("Frames per label")
    return png(fig)


def confidence_histograms(per_label: Mapping[str, np.ndarray], threshold: float) -> bytes:
    """One histogram of confidence per label, shared x axis, the low-confidence line in red."""
    labels = list(per_label)
    cols = 4
    rows = max(1, -(-len(labels) // cols))
    # A fixed grid: constrained layout costs seconds on 17 panels.
    fig = _figure(12, 2.0 * rows + 0.6, layout=None)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False)
    height = 2.0 * rows + 0.6
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.35 / height, top=1 - 0.65 / height,
                        hspace=0.45, wspace=0.25)
    bins = np.linspace(0.0, 1.0, 21)
    for ax, label in zip(axes.flat, labels, strict=False):
        ax.hist(per_label[label], bins=bins, color="#4c72b0")
        ax.axvline(threshold, color="#c44e52", linewidth=1)
        ax.set_title(f"{label} (n={len(per_label[label])})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(labels):]:
        ax.set_visible(False)
    fig.suptitle("Confidence per label")
    return png(fig)


def low_confidence_over_time(dates: Sequence[str], shares: Sequence[float],
                             threshold: float) -> bytes:
    fig = _figure(10, 3.5)
    ax = fig.add_subplot()
    x = np.arange(len(dates))
    ax.plot(x, 100 * np.asarray(shares, dtype=float), marker="o", color="#c44e52")
    ax.set_xticks(x, dates, rotation=45 if len(dates) > 6 else 0,
                  ha="right" if len(dates) > 6 else "center")
    ax.set_ylabel(f"% frames with confidence < {threshold:g}")
    ax.set_ylim(bottom=0)
    ax.set_title("Low-confidence share per day")
    ax.grid(alpha=0.3)
    return png(fig)


def rejections_by_reason(reasons: Sequence[str], counts: Sequence[int]) -> bytes:
    fig = _figure(8, 0.35 * len(reasons) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(reasons))
    ax.barh(y, counts, color="#dd8452")
    ax.set_yticks(y, reasons)
    ax.invert_yaxis()
    ax.set_xlabel("files")
    ax.set_title("Rejections by reason")
    return png(fig)


def class_mix(classes: Sequence[str], observed: Sequence[float],
              expected: Sequence[float]) -> bytes:
    """Observed vs training share per class, side by side."""
    fig = _figure(10, 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    ax.bar(x - 0.2, 100 * np.asarray(expected), width=0.4, label="training", color="#8c8c8c")
    ax.bar(x + 0.2, 100 * np.asarray(observed), width=0.4, label="predicted",
           color="#4c72b0")
    ax.set_xticks(x, classes, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("% of frames")
    ax.set_title("Class mix: predictions vs training data")
    ax.legend()
    return png(fig)


def run_series(runs: Sequence[str], series: Mapping[str, Sequence[float | None]], title: str,
               ylabel: str, threshold: float | None = None, threshold_label: str = "",
               ylim: tuple[float, float] | None = None) -> bytes:
    """One line per metric over the monitored runs (None: a gap), the alert threshold as a
    dashed line so a reader sees at a glance which runs crossed it."""
    fig = _figure(10, 3.5)
    ax = fig.add_subplot()
    x = np.arange(len(runs))
    for (name, values), color in zip(series.items(), _colors(len(series)), strict=True):
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        if np.isfinite(y).any():
            ax.plot(x, y, marker="o", color=color, label=name)
    if threshold is not None:
        ax.axhline(threshold, color="#c44e52", linestyle="--",
                   label=threshold_label or f"threshold {threshold:g}")
    step = max(1, len(runs) // 12)
    ax.set_xticks(x[::step], list(runs)[::step], rotation=45 if len(runs) > 6 else 0,
                  ha="right" if len(runs) > 6 else "center")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return png(fig)


def flip_matrix(labels: Sequence[str], matrix: Sequence[Sequence[int]], from_version: str,
                to_version: str) -> bytes:
    """Frames per (old label, new label) as a heat map, counts written in the cells; the
    colour is log-scaled so a few flips still show next to a large diagonal."""
    from matplotlib.colors import LogNorm

    counts = np.asarray(matrix, dtype=float)
    k = len(labels)
    size = 0.42 * k + 2.5
    fig = _figure(size + 1.5, size)
    ax = fig.add_subplot()
    shown = np.where(counts > 0, counts, np.nan)
    norm = LogNorm(vmin=1, vmax=max(counts.max(), 2))
    image = ax.imshow(shown, cmap="viridis", norm=norm)
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                        color="black" if norm(counts[i, j]) > 0.6 else "white",
                        fontweight="bold" if i != j else "normal")
    ax.set_xticks(np.arange(k), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(k), labels, fontsize=8)
    ax.set_xlabel(f"new label ({to_version})")
    ax.set_ylabel(f"old label ({from_version})")
    ax.set_title(f"Label flips {from_version} -> {to_version}")
    fig.colorbar(image, ax=ax, shrink=0.7, label="frames")
    return png(fig)
