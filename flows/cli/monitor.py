"""Command: monitor: how the production model is doing, run after run, without labels.

Reads the run history (``OUTPUT/monitoring/runs``, one row per classification run, written
by ``tasks.monitor.history``) and prints each run's key scores and every metric's trend
over the last ``--days`` days, with the runs the settings' thresholds would alert on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.common import DataOpt, JsonOpt, emit, fail, local_path, setup
from flows.cli.query import OutputOpt

# What the human table shows per run (the JSON carries every scalar column).
RUN_COLUMNS = ["run_at", "kind", "model_version", "frames", "est_accuracy", "est_macro_f1",
               "class_mix_psi", "input_psi", "confidence_psi", "low_confidence_share",
               "ood_share", "labeled_frames", "accuracy", "macro_f1"]


def monitor(
    data: DataOpt = None,
    output: OutputOpt = None,
    days: Annotated[int, typer.Option("--days", help="The last N UTC days of runs.")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Trend of every monitoring metric over the last N days of classification runs:
    label-free accuracy estimate, drift scores against the model's training reference,
    confidence, out-of-distribution and missing-joint shares; runs that would alert under
    POSEBATCH_MONITOR_PSI_THRESHOLD / POSEBATCH_MONITOR_MIN_EST_ACCURACY are listed."""
    from tasks.monitor.feedback import read_feedback, with_realized
    from tasks.monitor.trend import read_runs, trend

    if days < 1:
        fail("--days must be at least 1", as_json)
    settings = setup(data)
    out = str(output or settings.output_dir)
    try:
        runs = with_realized(read_runs(out, days), read_feedback(out))
    except Exception as exc:  # unreadable history: one line, not a traceback
        fail(f"cannot read the run history under {out}: {exc}", as_json)
    result = trend(runs, settings.monitor_psi_threshold, settings.monitor_min_est_accuracy)
    result = {"ok": True, "output": out, "days": days,
              "thresholds": {"psi": settings.monitor_psi_threshold,
                             "min_est_accuracy": settings.monitor_min_est_accuracy},
              **result, "history": _scalars(runs)}
    emit(result, as_json, _human(result, runs))


def _scalars(runs: Any) -> list[dict[str, Any]]:
    """Each run's scalar columns (lists of per-joint values and the class mix left out)."""
    keep = [f.name for f in runs.schema if not str(f.type).startswith("list")]
    return runs.select(keep).to_pylist()


def _human(result: dict[str, Any], runs: Any) -> str:
    """Runs as an aligned table, then each metric's trend and the alerts."""
    from tasks.read.table_output import format_aligned

    if not result["runs"]:
        return (f"no monitored runs in the last {result['days']} days under "
                f"{result['output']}")
    lines = [format_aligned(runs.select(RUN_COLUMNS)), "",
             "metric                 first      last      mean     slope/run"]
    for name, m in result["metrics"].items():
        if m is not None:
            lines.append(f"{name:<22} {m['first']:>8.3f}  {m['last']:>8.3f}  "
                         f"{m['mean']:>8.3f}  {m['slope_per_run']:>+10.4f}")
    lines.append("")
    if not result["alerts"]:
        lines.append("no run crosses the alert thresholds")
    for a in result["alerts"]:
        lines.append(f"ALERT {a['run_at']:%Y-%m-%d %H:%M} {a['flow_run_id']}: "
                     + "; ".join(a["reasons"]))
    return "\n".join(lines)


def feedback(
    labels_csv: Annotated[Path, typer.Argument(
        help="CSV with source_path[,frame_index],label (like the generator's "
        "incoming_labels.csv; no frame_index: every frame of the file).", parser=local_path)],
    data: DataOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record true labels for frames already classified (OUTPUT/monitoring/feedback), so
    `posebatch monitor` shows realized accuracy and macro-F1 next to the estimate. The same
    CSV twice records nothing twice; unknown labels and rows matching no prediction are
    counted and reported; a CSV none of whose rows matches is an error (exit 2)."""
    from models.spec import class_names
    from tasks.monitor.feedback import (
        PREDICTION_COLUMNS,
        FeedbackError,
        match_labels,
        parse_labels,
        record_feedback,
    )
    from tasks.read.query import QueryError, read_predictions

    settings = setup(data)
    out = str(output or settings.output_dir)
    try:
        labels = parse_labels(labels_csv.read_text(encoding="utf-8-sig"))
        preds = read_predictions(out, columns=PREDICTION_COLUMNS)
    except (OSError, FeedbackError, QueryError) as exc:
        fail(str(exc), as_json)
    res = match_labels(labels, preds, class_names())
    if labels.num_rows and not res["matched"].num_rows:
        fail(_nothing_matched(labels.num_rows, res, out), as_json)
    path, new = (record_feedback(out, res["matched"]) if res["matched"].num_rows
                 else (None, False))
    result = {"ok": True, "labels_csv": str(labels_csv), "rows": labels.num_rows,
              "matched_frames": res["matched"].num_rows, "recorded": new, "path": path,
              "unmatched_rows": res["unmatched_rows"], "rejected_rows": res["rejected_rows"],
              "rejected": res["rejected"]}
    emit(result, as_json, _feedback_human(result))


def _nothing_matched(rows: int, res: dict[str, Any], output: str) -> str:
    """Why a labels file with rows recorded nothing, in one line: a script must not take a
    CSV for another output (or with wrong paths) for success."""
    first = res["first_unmatched"]
    where = (f"first unmatched source_path {first!r}" if first is not None else
             f"every row has an unknown label, e.g. {res['rejected'][0]['true_label']!r}")
    return (f"0 of the {rows} label rows match a classified frame in {output} ({where}): "
            "source_path must be relative to the input folder, as `posebatch query` shows "
            "it; check the paths and --output")


def _feedback_human(r: dict[str, Any]) -> str:
    state = ("recorded" if r["recorded"] else
             "already recorded (nothing new)" if r["path"] else "nothing to record")
    lines = [f"{r['rows']} label rows: {r['matched_frames']} classified frames matched, "
             f"{state}", f"  no prediction for {r['unmatched_rows']} rows",
             f"  unknown label in {r['rejected_rows']} rows"]
    lines += [f"    {x['source_path']}: {x['true_label']!r}" for x in r["rejected"][:5]]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("monitor")(monitor)
    app.command("feedback")(feedback)
