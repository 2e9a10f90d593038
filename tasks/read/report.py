"""The HTML report: summary tables and plots of predictions and rejections in one file.

Self-contained on purpose: every plot is a base64 PNG inside the page and the CSS is inline,
so the report can be mailed, attached to a ticket or opened offline. The numbers come from
``tasks.read.summary`` (the same functions behind ``query --summary`` and the flow's markdown
artifact, re-exported here as ``summary_markdown``).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.read import plots
from tasks.read.summary import class_mix_drift, label_counts, rollup, summarize, summary_markdown

REPORT_COLUMNS = ["date", "label", "confidence", "batch", "source_path", "model_version"]
NO_TRAINING = "no training distribution recorded"

__all__ = ["REPORT_COLUMNS", "NO_TRAINING", "build_report", "training_distribution",
           "summary_markdown"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.meta{color:#666}table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.2rem .6rem}td.n{text-align:right}th{background:#f4f4f4}
img{max-width:100%;height:auto;display:block;margin:.5rem 0}.note{color:#8a5a00}
.kpi{display:inline-block;margin:0 2rem .5rem 0}.kpi b{font-size:1.4rem;display:block}
"""


def training_distribution(registry_root: Path | str) -> tuple[dict[str, float] | None, str]:
    """The production model's training class counts, and a sentence saying where they came
    from (or why there are none). Reads only ``metadata.json``: no TensorFlow."""
    from models.registry import Registry, RegistryError

    try:
        entry = Registry(registry_root).resolve()
    except RegistryError:
        return None, f"no production model registered in {registry_root}: {NO_TRAINING}"
    dist = entry.metadata.get("class_distribution")
    if not dist:
        return None, f"production model {entry.version}: {NO_TRAINING}"
    total = sum(float(v) for v in dist.values())
    return ({str(k): float(v) for k, v in dist.items()},
            f"production model {entry.version}, trained on {total:.0f} labelled frames")


def _img(data: bytes, alt: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for v in row:
            num = isinstance(v, int | float) and not isinstance(v, bool)
            text = f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(f'<td class="n">{text}</td>' if num else f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _prediction_sections(pred: pa.Table, low: float) -> list[str]:
    summary = summarize(pred, low)
    by_day = rollup(summary, "date").to_pylist()
    by_label = rollup(summary, "label").to_pylist()
    dates = [str(r["date"]) for r in by_day]
    labels = [r["label"] for r in by_label]
    counts = {(str(r["date"]), r["label"]): r["frames"] for r in summary.to_pylist()}
    conf = pred.column("confidence").to_numpy()
    lab = pred.column("label").to_numpy(zero_copy_only=False)
    per_label = {x: conf[lab == x] for x in labels}
    return [
        "<h2>Frames per day</h2>",
        _img(plots.frames_per_day(dates, labels, counts), "frames per day by label"),
        _table(["date", "frames", "mean confidence", "low-confidence share"],
               [[r["date"], r["frames"], r["mean_confidence"], _pct(r["low_confidence_share"])]
                for r in by_day]),
        "<h2>Frames per label</h2>",
        _img(plots.frames_per_label(labels, [r["frames"] for r in by_label]),
             "frames per label"),
        _table(["label", "frames", "share", "mean confidence", "low-confidence share"],
               [[r["label"], r["frames"], _pct(r["frames"] / pred.num_rows),
                 r["mean_confidence"], _pct(r["low_confidence_share"])] for r in by_label]),
        "<h2>Confidence per label</h2>",
        _img(plots.confidence_histograms(per_label, low), "confidence histogram per label"),
        "<h2>Low-confidence share over time</h2>",
        f"<p>Share of frames with confidence below {low:g} (settings.low_confidence).</p>",
        _img(plots.low_confidence_over_time(dates, [r["low_confidence_share"] for r in by_day],
                                            low), "low-confidence share per day"),
    ]


def _rejection_section(rej: pa.Table) -> list[str]:
    out = ["<h2>Rejections by reason</h2>"]
    if rej.num_rows == 0:
        return out + ["<p>No rejected files in this range.</p>"]
    vc = sorted(((v["values"].as_py(), v["counts"].as_py())
                 for v in pc.value_counts(rej.column("reason"))), key=lambda t: (-t[1], t[0]))
    return out + [_img(plots.rejections_by_reason([r for r, _ in vc], [c for _, c in vc]),
                       "rejections by reason"),
                  _table(["reason", "files"], vc)]


def _drift_section(pred: pa.Table, training: Mapping[str, float] | None,
                   model_note: str) -> list[str]:
    out = ["<h2>Class mix vs training</h2>", f"<p>{html.escape(model_note)}.</p>"]
    if not training:
        if NO_TRAINING not in model_note:
            out.append(f'<p class="note">{NO_TRAINING}.</p>')
        return out
    if pred.num_rows == 0:
        return out + ["<p>No predictions to compare.</p>"]
    d = class_mix_drift(label_counts(pred), training)
    out.append(f"<p>Population stability index <b>PSI = {d['psi']:.3f}</b> ({d['verdict']}; "
               "&lt; 0.1 stable, 0.1-0.25 moderate, &gt; 0.25 major shift). Chi-square "
               f"goodness of fit {d['chi2']:.1f} with {d['dof']} degrees of freedom, "
               f"p = {d['p_value']:.3g} (with many frames even small shifts are "
               "significant; PSI is the figure to act on).</p>")
    out.append(_img(plots.class_mix(d["classes"], d["observed_share"], d["expected_share"]),
                    "class mix vs training"))
    out.append(_table(["class", "training share", "predicted share", "PSI term"],
                      [[c, _pct(e), _pct(o), t] for c, o, e, t in
                       zip(d["classes"], d["observed_share"], d["expected_share"],
                           d["psi_terms"], strict=True)]))
    return out


MONITOR_PLOTS = (
    ("Estimated vs realized accuracy", ("est_accuracy", "accuracy", "est_macro_f1",
                                        "macro_f1"), "share of frames", "min_est_accuracy"),
    ("Drift scores (PSI against the training reference)",
     ("class_mix_psi", "input_psi", "input_psi_max", "confidence_psi"), "PSI", "psi"),
    ("Input statistics", ("missing_rate", "implausible_share", "ood_share"),
     "share of joints / frames", None),
    ("Confidence", ("confidence_p05", "confidence_p25", "confidence_p50",
                    "low_confidence_share"), "calibrated confidence / share", None),
)


def _monitoring_section(runs: pa.Table | None, thresholds: Mapping[str, float]) -> list[str]:
    """The run history (``tasks.monitor``): each plot one group of metrics over the runs,
    with its alert threshold drawn, then the runs that crossed one."""
    from tasks.monitor.drift import alert_reasons

    out = ["<h2>Monitoring</h2>"]
    if runs is None or not runs.num_rows:
        return out + ["<p>No monitored runs (the history under monitoring/runs is empty).</p>"]
    rows = runs.to_pylist()
    names = [f"{r['run_at']:%m-%d %H:%M}" for r in rows]
    out.append(f"<p>{len(rows)} runs; realized accuracy where labels were fed back "
               "(<code>posebatch feedback</code>).</p>")
    for title, metrics, ylabel, key in MONITOR_PLOTS:
        limit = thresholds.get(key) if key else None
        label = f"{key} {limit:g}" if limit is not None else ""
        out += [f"<h3>{html.escape(title)}</h3>",
                _img(plots.run_series(names, {m: [r.get(m) for r in rows] for m in metrics},
                                      title, ylabel, limit, label), title)]
    alerts = [[f"{r['run_at']:%Y-%m-%d %H:%M}", r["flow_run_id"], "; ".join(reasons)]
              for r in rows if (reasons := alert_reasons(r, thresholds["psi"],
                                                         thresholds["min_est_accuracy"]))]
    out.append(_table(["run at", "flow run", "alert reasons"], alerts) if alerts
               else "<p>No run crosses the alert thresholds.</p>")
    return out


def diff_section(diff: Mapping[str, Any]) -> list[str]:
    """The "Model versions" section: ``tasks.read.diff.compare``'s result as HTML."""
    f, t = diff["from_version"], diff["to_version"]
    hc = diff["high_confidence_flips"]
    kpis = [("frames scored by both", diff["frames"]), ("agreement", _pct(diff["agreement"])),
            ("flipped", diff["flipped"]),
            (f"flips with new confidence ≥ {diff['min_confidence']:g}", hc["total"])]
    out = [f"<h2>Model versions: {html.escape(f)} → {html.escape(t)}</h2>",
           f"<p>On the frames both versions scored ({diff['only_from']} scored by "
           f"{html.escape(f)} only, {diff['only_to']} by {html.escape(t)} only). The pair is "
           "the production version and the version before it (without a production version "
           "in the data: the two newest). Confidence shift = mean new confidence − mean old "
           "confidence, per old label.</p>",
           "".join(f'<div class="kpi"><b>{v}</b>{html.escape(k)}</div>' for k, v in kpis),
           _img(plots.flip_matrix(diff["labels"], diff["matrix"], f, t),
                f"label flips {f} to {t}")]
    if diff["flips"]:
        out += ["<h3>Largest flips</h3>", _table(
            ["old label", "new label", "frames"],
            [[d["old_label"], d["new_label"], d["frames"]] for d in diff["flips"][:15]])]
    out += ["<h3>Confidence shift per old label</h3>", _table(
        ["old label", "frames", "agreement", "mean old confidence", "mean new confidence",
         "shift"],
        [[d["label"], d["frames"], _pct(d["agreement"]), d["mean_old_confidence"],
          d["mean_new_confidence"], f"{d['shift']:+.3f}"] for d in diff["confidence_shift"]])]
    out.append(f"<h3>High-confidence flips to review ({hc['total']}, "
               f"{len(hc['rows'])} shown)</h3>")
    if hc["rows"]:
        out.append(_table(["source_path", "frame", "old → new", "old confidence",
                           "new confidence"],
                          [[r["source_path"], r["frame_index"],
                            f"{r['old_label']} → {r['new_label']}", r["old_confidence"],
                            r["new_confidence"]] for r in hc["rows"]]))
    else:
        out.append("<p>None.</p>")
    return out


def build_report(predictions: pa.Table, rejections: pa.Table, *, low_confidence: float,
                 training: Mapping[str, float] | None, model_note: str,
                 title: str = "posebatch report", scope: str = "",
                 monitoring: pa.Table | None = None,
                 thresholds: Mapping[str, float] | None = None,
                 diff: Mapping[str, Any] | None = None) -> str:
    """The whole report as one HTML string.

    ``predictions`` needs ``REPORT_COLUMNS``; ``rejections`` needs ``reason``; either may be
    empty. ``training`` is ``{class: count}`` of the production model's training data or
    ``None`` (then the drift section says so). ``monitoring``: the run history
    (``tasks.monitor.trend.read_runs``, with ``feedback.with_realized`` columns if any) and
    ``thresholds`` (``psi``, ``min_est_accuracy``) add the Monitoring section.
    ``predictions`` should hold one row per frame (``read_predictions``' default
    ``model_version="current"``). ``diff`` (from ``tasks.read.diff.compare``) adds the
    "Model versions" section.
    """
    now = datetime.now(UTC).isoformat(timespec="seconds")
    n = predictions.num_rows
    files = pc.count_distinct(predictions.column("source_path")).as_py() if n else 0
    batches = pc.count_distinct(predictions.column("batch")).as_py() if n else 0
    low = float(np.mean(predictions.column("confidence").to_numpy() < low_confidence)) \
        if n else 0.0
    versions = sorted(set(predictions.column("model_version").to_pylist())) if n else []
    kpis = [("frames", n), ("files", files), ("batches", batches),
            ("rejected files", rejections.num_rows), ("low-confidence share", _pct(low))]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Generated {now}. {html.escape(scope)} Models: '
        f"{html.escape(', '.join(versions) or 'none')}.</p>",
        "".join(f'<div class="kpi"><b>{v}</b>{html.escape(k)}</div>' for k, v in kpis),
    ]
    if n:
        parts += _prediction_sections(predictions, low_confidence)
    else:
        parts.append("<h2>Predictions</h2><p>No predictions in this range.</p>")
    parts += _rejection_section(rejections)
    parts += _drift_section(predictions, training, model_note)
    if diff:
        parts += diff_section(diff)
    if monitoring is not None:
        parts += _monitoring_section(monitoring, thresholds or {"psi": 0.25,
                                                               "min_est_accuracy": 0.85})
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")
