"""What one classification run reports: the metric table and the predictions summary.

Pure (no Prefect): the flow publishes both as artifacts, the CLI prints the table. The
markdown itself comes from ``tasks.read.summary.summary_markdown``, the same rendering as
``posebatch query --summary`` and the HTML report, so the numbers agree everywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import pyarrow as pa
import pyarrow.compute as pc

from tasks.read.summary import summary_markdown


class RunSummary(TypedDict):
    """One classification run's facts: the flow's return value, the CLI's output (``--json``
    prints it), the table artifact and the watch loop's record. Counts are of files unless
    named frames."""

    ok: bool                      # False when due files could not be read or lost frames
                                  # cannot be restored
    problem: str                  # that cause, in one line ("" when ok)
    flow_run_id: str | None
    input_dir: str
    output_dir: str
    model_version: str
    engine: NotRequired[str]      # keras or onnx (tasks/classify/engine.py), and why
    engine_reason: NotRequired[str]
    files_seen: int
    not_ready: int                # in batches still incomplete
    batches_waiting: list[str]
    already_processed: int
    new: int
    deferred: int                 # new, left for the next run (--max-files, --max-bytes)
    backlog: dict[str, Any]       # that backlog: files, bytes, oldest_batch, oldest_age_hours
    classified: int
    frames: int
    rejected: int
    rejected_by_reason: dict[str, int]
    duplicates: int
    unchanged: int
    vanished: int
    unreadable: int
    unreachable: int              # missing on the workers though present here
    labels: dict[str, int]        # frames per predicted label
    out_of_distribution: int      # frames with an ood_* warning
    warnings: dict[str, int]      # frames per warning code
    parts_written: int
    moved: int
    reconciled: dict[str, int]
    lost_parts: int               # committed parts found missing or unreadable at the start
    restorable: int               # their files, forgotten and classified again from the input
    unrestorable: int             # their files whose content the input no longer holds
    compacted_partitions: int
    monitoring: NotRequired[dict[str, Any]]  # est_accuracy, est_macro_f1, input_psi, alerts
    seconds: float
    work_seconds: float
    stage_seconds: dict[str, float]  # summed over chunks: load, read_wait, copy, compute,
                                     # ood (and monitoring statistics), total, commit
    files_per_second: float
    frames_per_second: float


# Columns of a predictions table the markdown summary needs (labels, confidences, days).
SUMMARY_INPUT = ("label", "confidence", "classified_at")


class RunFrames:
    """The run's predictions, kept as slim as the summary allows.

    Only label (dictionary-encoded), confidence and time stamp are kept: about 16 bytes a
    frame, against kilobytes of heatmap, so a run's memory stays bounded by its input
    streaming, not by this tally.
    """

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []

    def add(self, predictions: pa.Table | None) -> None:
        if predictions is None or predictions.num_rows == 0:
            return
        slim = predictions.select(list(SUMMARY_INPUT))
        label = pc.dictionary_encode(slim.column("label"))
        self._tables.append(slim.set_column(0, "label", label).combine_chunks())

    def table(self) -> pa.Table:
        """The kept columns with ``label`` as plain strings (what ``summarize`` expects)."""
        if not self._tables:
            return pa.table({"label": pa.array([], pa.string()),
                             "confidence": pa.array([], pa.float32()),
                             "classified_at": pa.array([], pa.timestamp("us", tz="UTC"))})
        merged = pa.concat_tables(self._tables)
        return merged.set_column(0, "label", pc.cast(merged.column("label"), pa.string()))


def training_shares(metadata: Mapping[str, Any]) -> dict[str, float] | None:
    """A model's training class counts (``class_distribution`` in its registry metadata)."""
    dist = metadata.get("class_distribution")
    if not dist:
        return None
    return {str(k): float(v) for k, v in dist.items()}


def run_markdown(summary: Mapping[str, Any], frames: RunFrames,
                 model_metadata: Mapping[str, Any], low_confidence: float = 0.5) -> str:
    """The run's predictions by label and confidence, drift against the training mix of the
    model that classified them, and rejections by reason, as markdown."""
    reasons = Counter(summary.get("rejected_by_reason", {}))
    rejections = pa.table({"reason": pa.array(sorted(reasons.elements()), pa.string())})
    training = training_shares(model_metadata)
    body = summary_markdown(frames.table(), low_confidence=low_confidence,
                            rejections=rejections,
                            title=f"posebatch classify: {summary['output_dir']}",
                            training_distribution=training)
    head, _, rest = body.partition("\n\n")
    note = (f"Model **{summary['model_version']}**; files: {summary['files_seen']} seen, "
            f"{summary['new']} new, {summary['classified']} classified, "
            f"{summary['rejected']} rejected, {summary['deferred']} left for the next run.")
    if training is None:
        note += (f" Model {summary['model_version']} records no training class "
                 "distribution: no drift figure.")
    else:
        note += (f" Drift is measured against model {summary['model_version']}'s "
                 f"training mix ({sum(training.values()):.0f} labelled frames).")
    return f"{head}\n\n{note}\n\n{rest}"


def summary_table(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run summary as metric/value rows (the table artifact and the CLI print the same)."""
    rows = [
        ("model version", summary["model_version"]),
        ("engine", f"{summary.get('engine', '')} ({summary.get('engine_reason', '')})"),
        ("files seen", summary["files_seen"]),
        ("files in incomplete batches", summary["not_ready"]),
        ("files already processed", summary["already_processed"]),
        ("files new", summary["new"]),
        ("files left for the next run (--max-files/--max-bytes)", summary["deferred"]),
        ("files classified", summary["classified"]),
        ("frames classified", summary["frames"]),
        ("files rejected", summary["rejected"]),
    ]
    rows += [(f"  rejected: {k}", v) for k, v in sorted(summary["rejected_by_reason"].items())]
    rows += [
        ("files recognised (same content, other path)", summary["duplicates"]),
        ("files unchanged (only time stamp changed)", summary["unchanged"]),
        ("files vanished before reading", summary["vanished"]),
        ("files unreadable (retried next run)", summary["unreadable"]),
        ("files missing on the workers, present here", summary.get("unreachable", 0)),
    ]
    if summary.get("lost_parts"):
        rows += [("output parts lost (missing/unreadable)", summary["lost_parts"]),
                 ("  their files classified again", summary.get("restorable", 0)),
                 ("  their files not in the input (lost)", summary.get("unrestorable", 0))]
    rows += [(f"  label: {k}", v) for k, v in sorted(summary["labels"].items())]
    rows.append(("frames flagged out of distribution", summary.get("out_of_distribution", 0)))
    left = summary.get("backlog") or {}
    if left.get("files"):
        rows += [("  backlog bytes", left.get("bytes", 0)),
                 ("  oldest waiting batch", f"{left.get('oldest_batch')} "
                                            f"({left.get('oldest_age_hours')} h old)")]
    mon = summary.get("monitoring") or {}
    if mon.get("est_accuracy") is not None:
        rows.append(("estimated accuracy (no labels)", f"{mon['est_accuracy']:.3f}"))
    rows += [("  monitoring alert", a) for a in mon.get("alerts", [])]
    rows += [(f"  warning: {k}", v) for k, v in sorted(summary.get("warnings", {}).items())]
    rows += [
        ("throughput (files/s)", f"{summary['files_per_second']:.1f}"),
        ("throughput (frames/s)", f"{summary['frames_per_second']:.1f}"),
        ("seconds", f"{summary['seconds']:.2f}"),
    ]
    return [{"metric": k, "value": str(v)} for k, v in rows]


def format_summary(summary: Mapping[str, Any]) -> str:
    """Plain-text table of ``summary_table`` for the terminal."""
    rows = summary_table(summary)
    width = max(len(r["metric"]) for r in rows)
    head = f"classified into {summary['output_dir']}"
    return "\n".join([head] + [f"  {r['metric']:<{width}}  {r['value']}" for r in rows])
