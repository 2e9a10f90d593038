"""Reading the run history back: the runs of the last days and each metric's trend.

Why a trend and not a last value: one small run can be noisy (a PSI on 50 frames means
little); a score that keeps rising over days is what an operator acts on. Read with
pyarrow's dataset over the hive-partitioned files (``tasks.monitor.history``), the day
partitions outside the window are never opened.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from tasks.monitor.drift import alert_reasons
from tasks.monitor.history import RUNS_DIR, RUNS_SCHEMA

# The scalar metrics a trend is shown for, in display order.
TREND_METRICS = ("frames", "frames_per_second", "est_accuracy", "est_macro_f1",
                 "accuracy", "macro_f1",
                 "class_mix_psi", "input_psi", "input_psi_max", "confidence_psi",
                 "confidence_p05", "confidence_p50", "low_confidence_share", "ood_share",
                 "missing_rate", "implausible_share")


def read_runs(output_dir: str, days: int | None = None, today: date | None = None
              ) -> pa.Table:
    """The history rows (plus ``date``) of the last ``days`` UTC days, oldest run first;
    an empty table when there is no history yet."""
    from tasks.io.storage import Location

    loc = Location(output_dir)
    schema = RUNS_SCHEMA.append(pa.field("date", pa.date32()))
    if not loc.exists(RUNS_DIR):
        return schema.empty_table()
    part = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
    dataset = ds.dataset(loc.path(RUNS_DIR), filesystem=loc.fs, format="parquet",
                         partitioning=part, schema=schema,
                         exclude_invalid_files=False)
    expr = None
    if days is not None:
        first = (today or datetime.now(UTC).date()) - timedelta(days=days - 1)
        expr = ds.field("date") >= pa.scalar(first, pa.date32())
    return dataset.to_table(filter=expr).sort_by("run_at")


def trend(runs: pa.Table, psi_threshold: float, min_est_accuracy: float) -> dict[str, Any]:
    """Per metric of ``TREND_METRICS``: first, last, min, max, mean and the least-squares
    slope per run (None where no run has a value); and per run the alert reasons under the
    given thresholds."""
    rows = runs.to_pylist()
    metrics = {}
    for name in TREND_METRICS:
        vals = np.array([r[name] for r in rows if r.get(name) is not None], float)
        if not len(vals):
            metrics[name] = None
            continue
        slope = float(np.polyfit(np.arange(len(vals)), vals, 1)[0]) if len(vals) > 1 else 0.0
        metrics[name] = {"first": float(vals[0]), "last": float(vals[-1]),
                         "min": float(vals.min()), "max": float(vals.max()),
                         "mean": float(vals.mean()), "slope_per_run": slope,
                         "runs": int(len(vals))}
    alerts = [{"flow_run_id": r["flow_run_id"], "run_at": r["run_at"],
               "reasons": alert_reasons(r, psi_threshold, min_est_accuracy)} for r in rows]
    return {"runs": len(rows), "metrics": metrics,
            "alerts": [a for a in alerts if a["reasons"]]}
