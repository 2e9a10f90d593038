"""The run history: one monitoring row per classification run, its schema, its writer.

Why one Parquet file per run: a run appends without touching earlier files (no read-modify-
write, no lock), a rerun of the same flow run replaces its own file (the name is the flow
run id: idempotent), and the history is hive-partitioned like the predictions, so DuckDB,
pandas or ``posebatch sql`` read it as one table::

    read_parquet('OUTPUT/monitoring/runs/**/*.parquet', hive_partitioning=true)

This module owns the row's schema (``RUNS_SCHEMA``); ``monitor_row`` builds a row from a
run's predictions (a table, or the ``PredictionStats`` the flow folded chunk by chunk), its
``InputStats`` and the model's reference (``tasks.monitor.reference``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.monitor.bins import finite_or_none
from tasks.monitor.drift import (
    CONFIDENCE_EDGES,
    class_mix_scores,
    joint_height_psi,
    psi,
)
from tasks.monitor.estimate import estimate_from_confusion
from tasks.monitor.inputs import InputStats
from tasks.monitor.predictions import PredictionStats

RUNS_DIR = "monitoring/runs"      # under the classification output root
_F64 = pa.float64()
_JOINTS = pa.list_(_F64)          # 17 values, COCO keypoint order

RUNS_SCHEMA = pa.schema([
    pa.field("flow_run_id", pa.string(), nullable=False),
    pa.field("run_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("kind", pa.string()),                 # classify, rescore or retrain
    pa.field("model_version", pa.string()),
    pa.field("frames", pa.int64(), nullable=False),
    pa.field("files", pa.int64()),                 # files classified
    pa.field("files_rejected", pa.int64()),
    pa.field("seconds", _F64),
    pa.field("frames_per_second", _F64),
    pa.field("class_mix", pa.list_(pa.struct([("label", pa.string()),
                                              ("frames", pa.int64())]))),
    pa.field("confidence_p05", _F64),
    pa.field("confidence_p25", _F64),
    pa.field("confidence_p50", _F64),
    pa.field("low_confidence_share", _F64),
    pa.field("ood_share", _F64),                   # frames with an ood_* warning
    pa.field("implausible_share", _F64),           # frames whose skeleton is implausible
    pa.field("joint_height_p10", _JOINTS),
    pa.field("joint_height_p50", _JOINTS),
    pa.field("joint_height_p90", _JOINTS),
    pa.field("joint_width_mean", _JOINTS),         # peak sigma (px), joints with a peak
    pa.field("joint_missing_rate", _JOINTS),       # peak below models.ood.NO_PEAK
    pa.field("joint_height_psi", _JOINTS),         # against the reference, per joint
    pa.field("missing_rate", _F64),                # mean over joints
    pa.field("input_psi", _F64),                   # mean of joint_height_psi
    pa.field("input_psi_max", _F64),
    pa.field("class_mix_psi", _F64),
    pa.field("class_mix_chi2", _F64),
    pa.field("class_mix_p_value", _F64),
    pa.field("confidence_psi", _F64),
    pa.field("est_accuracy", _F64),
    pa.field("est_macro_f1", _F64),
    pa.field("ref_est_accuracy", _F64),            # the reference's own estimate
])
DRIFT_COLUMNS = ("class_mix_psi", "input_psi", "confidence_psi")


def monitor_row(predictions: pa.Table | PredictionStats, input_stats: InputStats | None,
                reference: Mapping[str, Any] | None, run_info: Mapping[str, Any]
                ) -> dict[str, Any]:
    """One run's monitoring row (``RUNS_SCHEMA`` keys; NaN stored as null).

    ``predictions``: the run's predictions table, or the ``PredictionStats`` the flow folded
    chunk by chunk. ``input_stats``: the run's ``InputStats`` (None: no input columns).
    ``reference``: the model's metadata ``monitor`` (None: no drift scores). ``run_info``:
    ``flow_run_id`` (required), ``run_at`` (UTC datetime, default now), ``model_version``,
    ``files``, ``files_rejected``, ``seconds``, ``class_names`` (else from the table's
    schema metadata or the reference) and ``low_confidence`` (default 0.5)."""
    preds = _prediction_stats(predictions, run_info, reference)
    row = {**_run_part(preds, run_info), **_prediction_part(preds),
           **_input_part(input_stats), **_drift_part(preds, input_stats, reference)}
    return {k: finite_or_none(row.get(k)) for k in RUNS_SCHEMA.names}


def _class_names(table: pa.Table, run_info: Mapping[str, Any],
                 reference: Mapping[str, Any] | None) -> list[str]:
    import json

    if run_info.get("class_names"):
        return list(run_info["class_names"])
    meta = table.schema.metadata or {}
    if b"posebatch.class_names" in meta:
        return list(json.loads(meta[b"posebatch.class_names"]))
    if reference and reference.get("class_names"):
        return list(reference["class_names"])
    raise ValueError("monitor_row: no class names (run_info, table metadata or reference)")


def _prediction_stats(predictions: pa.Table | PredictionStats, run_info: Mapping[str, Any],
                      reference: Mapping[str, Any] | None) -> PredictionStats:
    if isinstance(predictions, PredictionStats):
        return predictions
    names = _class_names(predictions, run_info, reference)
    return PredictionStats(names, float(run_info.get("low_confidence", 0.5))).add(predictions)


def _run_part(preds: PredictionStats, run_info: Mapping[str, Any]) -> dict[str, Any]:
    seconds = run_info.get("seconds")
    return {"flow_run_id": str(run_info["flow_run_id"]),
            "run_at": run_info.get("run_at") or datetime.now(UTC),
            "kind": run_info.get("kind", "classify"),
            "model_version": run_info.get("model_version"), "frames": preds.frames,
            "files": run_info.get("files"), "files_rejected": run_info.get("files_rejected"),
            "seconds": seconds,
            "frames_per_second": preds.frames / seconds if seconds else None}


def _prediction_part(preds: PredictionStats) -> dict[str, Any]:
    p05, p25, p50 = preds.confidence_quantiles((0.05, 0.25, 0.5))
    summary = preds.summary()
    est = (estimate_from_confusion(preds.confusion, preds.class_names)
           if preds.confusion is not None else {"accuracy": None, "macro_f1": None})
    return {"class_mix": [{"label": k, "frames": int(v)}
                          for k, v in sorted(preds.labels.items())],
            "confidence_p05": p05, "confidence_p25": p25, "confidence_p50": p50,
            "low_confidence_share": summary["low_confidence_share"],
            "ood_share": summary["ood_share"],
            "est_accuracy": est["accuracy"], "est_macro_f1": est["macro_f1"]}


def _input_part(stats: InputStats | None) -> dict[str, Any]:
    if stats is None or not stats.frames:
        return {}
    s = stats.summary()
    return {"implausible_share": s["implausible_share"],
            "joint_height_p10": s["height_p10"], "joint_height_p50": s["height_p50"],
            "joint_height_p90": s["height_p90"], "joint_width_mean": s["width_mean"],
            "joint_missing_rate": s["missing_rate"],
            "missing_rate": float(np.mean(s["missing_rate"]))}


def _drift_part(preds: PredictionStats, stats: InputStats | None,
                reference: Mapping[str, Any] | None) -> dict[str, Any]:
    if not reference:
        return {}
    mix = class_mix_scores(dict(preds.labels), reference)
    out = {"class_mix_psi": mix["psi"], "class_mix_chi2": mix["chi2"],
           "class_mix_p_value": mix["p_value"],
           "ref_est_accuracy": reference.get("est_accuracy")}
    conf = reference.get("confidence")
    if conf and preds.frames:
        edges = conf.get("edges", CONFIDENCE_EDGES)
        out["confidence_psi"] = psi(np.asarray(conf["shares"]), preds.binned(edges))
    if stats is not None and stats.frames and reference.get("inputs"):
        per_joint = joint_height_psi(stats, reference)
        out |= {"joint_height_psi": per_joint.tolist(),
                "input_psi": float(np.nanmean(per_joint)),
                "input_psi_max": float(np.nanmax(per_joint))}
    return out


def _safe_name(run_id: str) -> str:
    """A file name from a flow run id (a UUID in practice; anything else made safe)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id).lstrip(".") or "run"


def run_path(row: Mapping[str, Any]) -> str:
    """``monitoring/runs/date=YYYY-MM-DD/<flow_run_id>.parquet`` (the UTC day of ``run_at``)."""
    day = row["run_at"].astimezone(UTC).date().isoformat()
    return f"{RUNS_DIR}/date={day}/{_safe_name(row['flow_run_id'])}.parquet"


def append_run(output_dir: str, row: Mapping[str, Any]) -> str:
    """Write ``row`` as its own Parquet file under ``output_dir`` (local or ``s3://``),
    atomically (readers see all of it or nothing). The same flow run id writes the same
    file again, and a copy under another day (a rerun after midnight) is removed: one file
    per run. Returns the file's path or URI."""
    from tasks.io.storage import Location

    loc = Location(output_dir)
    rel = run_path(row)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([dict(row)], schema=RUNS_SCHEMA), buf,
                   compression="zstd")
    loc.write_bytes(rel, buf.getvalue())
    name = rel.rsplit("/", 1)[1]
    for f in Location(loc.uri_of(RUNS_DIR)).list_files(".parquet"):
        if f.path.endswith("/" + name) and f"{RUNS_DIR}/{f.path}" != rel:
            loc.delete(f"{RUNS_DIR}/{f.path}")
    return loc.uri_of(rel)


def runs_glob(output_dir: str) -> str:
    """The glob DuckDB reads the history with (``hive_partitioning=true`` adds ``date``)."""
    return f"{str(output_dir).rstrip('/')}/{RUNS_DIR}/**/*.parquet"


def record_run(output_dir: str, predictions: pa.Table | PredictionStats,
               input_stats: InputStats | None, reference: Mapping[str, Any] | None,
               run_info: Mapping[str, Any]) -> dict[str, Any]:
    """``monitor_row`` then ``append_run``: the one call a flow makes at the end of a run.
    Returns the row (with ``path``, where it was written, added)."""
    row = monitor_row(predictions, input_stats, reference, run_info)
    return {**row, "path": append_run(output_dir, row)}
