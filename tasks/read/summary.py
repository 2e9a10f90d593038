"""Summaries of predictions: per day and label, class-mix drift, and a markdown rendering.

Pure pyarrow/NumPy, no I/O: ``posebatch query --summary``, the HTML report and the
classification flow's Prefect artifact all use these, so the numbers agree everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.io.schema import PARTITION_COLUMN

SUMMARY_COLUMNS = ["date", "label", "frames", "mean_confidence", "low_confidence_share"]
# Population stability index bands (the usual credit-risk convention).
PSI_BANDS = ((0.1, "stable"), (0.25, "moderate shift"), (math.inf, "major shift"))
SHARE_FLOOR = 1e-4  # PSI needs a share > 0 for classes seen on one side only


def days(table: pa.Table, ts_column: str = "classified_at") -> pa.Array:
    """Each row's UTC day (date32): the ``date`` partition column when the table has it (read
    from the dataset), else derived from the timestamp (a table as a writer holds it)."""
    if PARTITION_COLUMN in table.column_names:
        return pc.cast(table.column(PARTITION_COLUMN), pa.date32()).combine_chunks()
    ts = pc.cast(table.column(ts_column), pa.timestamp("us", tz="UTC"))
    return pc.cast(pc.cast(ts, pa.timestamp("us")), pa.date32()).combine_chunks()


def summarize(table: pa.Table, low_confidence: float = 0.5) -> pa.Table:
    """Frames, mean confidence and the share below ``low_confidence``, per day and label.

    ``table`` needs ``label`` and ``confidence`` plus ``date`` or ``classified_at``.
    """
    work = pa.table({
        "date": days(table),
        "label": table.column("label"),
        "confidence": pc.cast(table.column("confidence"), pa.float64()),
        "low": pc.cast(pc.less(table.column("confidence"), low_confidence), pa.float64()),
    })
    grouped = work.group_by(["date", "label"]).aggregate(
        [("confidence", "count"), ("confidence", "mean"), ("low", "mean")])
    out = pa.table({
        "date": grouped.column("date"),
        "label": grouped.column("label"),
        "frames": pc.cast(grouped.column("confidence_count"), pa.int64()),
        "mean_confidence": grouped.column("confidence_mean"),
        "low_confidence_share": grouped.column("low_mean"),
    })
    return out.sort_by([("date", "ascending"), ("label", "ascending")])


def rollup(summary: pa.Table, by: str) -> pa.Table:
    """Collapse a ``summarize`` table to one row per ``date`` or per ``label``
    (means weighted by frames)."""
    work = summary.append_column(
        "conf_sum", pc.multiply(summary.column("mean_confidence"), summary.column("frames")))
    work = work.append_column(
        "low_sum", pc.multiply(summary.column("low_confidence_share"), summary.column("frames")))
    g = work.group_by([by]).aggregate([("frames", "sum"), ("conf_sum", "sum"),
                                       ("low_sum", "sum")])
    frames = g.column("frames_sum")
    return pa.table({
        by: g.column(by),
        "frames": frames,
        "mean_confidence": pc.divide(g.column("conf_sum_sum"), pc.cast(frames, pa.float64())),
        "low_confidence_share": pc.divide(g.column("low_sum_sum"),
                                          pc.cast(frames, pa.float64())),
    }).sort_by(by)


def label_counts(table: pa.Table) -> dict[str, int]:
    """``{label: frames}`` of a predictions table."""
    vc = pc.value_counts(table.column("label"))
    return {v["values"].as_py(): v["counts"].as_py() for v in vc}


def class_mix_drift(observed: Mapping[str, int],
                    expected: Mapping[str, float]) -> dict[str, Any]:
    """Compare today's class mix with the training distribution.

    Returns the chi-square goodness-of-fit statistic (expected counts from training shares,
    each training count +0.5 so a class never seen in training does not divide by zero),
    its p-value, and the population stability index (shares floored at 1e-4). With many
    frames chi-square flags even tiny differences; PSI is the figure to act on
    (< 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift).
    """
    from scipy.stats import chi2

    classes = sorted(set(observed) | set(expected))
    obs = np.array([float(observed.get(c, 0)) for c in classes])
    exp_counts = np.array([float(expected.get(c, 0)) for c in classes]) + 0.5
    n = obs.sum()
    if n == 0:
        raise ValueError("no observed frames to compare")
    p_exp = exp_counts / exp_counts.sum()
    p_obs = obs / n
    expected_n = p_exp * n
    stat = float(((obs - expected_n) ** 2 / expected_n).sum())
    dof = len(classes) - 1
    a = np.maximum(p_obs, SHARE_FLOOR)
    b = np.maximum(np.array([float(expected.get(c, 0)) for c in classes])
                   / max(sum(expected.values()), 1e-12), SHARE_FLOOR)
    psi_terms = (a - b) * np.log(a / b)
    psi = float(psi_terms.sum())
    return {
        "classes": classes,
        "observed_share": p_obs.tolist(),
        "expected_share": (b / b.sum()).tolist(),
        "psi_terms": psi_terms.tolist(),
        "chi2": stat,
        "dof": dof,
        "p_value": float(chi2.sf(stat, dof)),
        "psi": psi,
        "verdict": next(name for limit, name in PSI_BANDS if psi < limit),
        "frames": int(n),
    }


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if i >= 1 else "---" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary_markdown(table: pa.Table, low_confidence: float = 0.5,
                     rejections: pa.Table | None = None, title: str = "posebatch summary",
                     training_distribution: Mapping[str, float] | None = None) -> str:
    """The predictions summary as markdown (for a Prefect artifact or a chat message).

    ``table`` is a predictions table (from ``read_predictions`` or as the flow wrote it).
    """
    parts = [f"# {title}", ""]
    n = table.num_rows
    nrej = 0 if rejections is None else rejections.num_rows
    parts.append(f"**{n}** frames classified, **{nrej}** files rejected; "
                 f"low confidence means < {low_confidence:g}.")
    if n:
        summary = summarize(table, low_confidence)
        by_label = rollup(summary, "label")
        parts += ["", "## By label", "", _md_table(
            ["label", "frames", "share", "mean confidence", "low-confidence share"],
            [[r["label"], str(r["frames"]), f"{r['frames'] / n:.1%}",
              f"{r['mean_confidence']:.3f}", f"{r['low_confidence_share']:.1%}"]
             for r in by_label.to_pylist()])]
        by_day = rollup(summary, "date")
        parts += ["", "## By day", "", _md_table(
            ["date", "frames", "mean confidence", "low-confidence share"],
            [[str(r["date"]), str(r["frames"]), f"{r['mean_confidence']:.3f}",
              f"{r['low_confidence_share']:.1%}"] for r in by_day.to_pylist()])]
        if training_distribution:
            d = class_mix_drift(label_counts(table), training_distribution)
            parts += ["", f"Class-mix drift vs training: PSI **{d['psi']:.3f}** "
                      f"({d['verdict']}), chi-square {d['chi2']:.1f} (dof {d['dof']}, "
                      f"p={d['p_value']:.3g})."]
    if nrej:
        vc = sorted(((v["values"].as_py(), v["counts"].as_py())
                     for v in pc.value_counts(rejections.column("reason"))),
                    key=lambda t: (-t[1], t[0]))
        parts += ["", "## Rejections by reason", "",
                  _md_table(["reason", "files"], [[r, str(c)] for r, c in vc])]
    return "\n".join(parts) + "\n"
