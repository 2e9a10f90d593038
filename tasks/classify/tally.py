"""What each committed chunk adds to a run's counts, and which skipped files fail the run.

Pure (no Prefect): the flow calls ``chunk_stats`` after each commit and folds it into one
``RunTally``; ``build_summary`` turns the tally into the run's summary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from models.ood import CODES as OOD_CODES
from tasks.classify.ledger import Ledger
from tasks.classify.outputs import Judged
from tasks.classify.run_summary import SUMMARY_INPUT, RunFrames, RunSummary
from tasks.io.storage import Location
from tasks.monitor.inputs import InputStats
from tasks.monitor.predictions import PredictionStats

COUNTERS = ("labels", "reasons", "status", "warnings")


def preds_summary(preds: pa.Table | None, stats: PredictionStats | None = None
                  ) -> dict[str, Any]:
    """A chunk's predictions reduced to what the run's tally needs: label and warning
    counts, frames, and either the table itself (``stats`` None: the tally folds it) or,
    where rows must not travel (a Dask worker's staged chunk), ``stats`` with the table
    folded in and only the run report's slim columns kept."""
    if preds is None or preds.num_rows == 0:
        return {"labels": Counter(), "warnings": Counter(), "frames": 0, "table": None,
                "prediction_stats": stats}
    flags = preds.column("warnings").to_pylist()
    warnings = Counter(code for codes in flags for code in codes)
    warnings["out_of_distribution"] = sum(1 for codes in flags if set(codes) & set(OOD_CODES))
    table = preds
    if stats is not None:
        stats.add(preds)
        table = preds.select(list(SUMMARY_INPUT))
    return {"labels": Counter(preds.column("label").to_pylist()), "warnings": warnings,
            "frames": int(preds.num_rows), "table": table, "prediction_stats": stats}


def chunk_stats(judged: Judged, ledger: Ledger, preds: pa.Table | None,
                summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """One committed chunk's counters, its skipped files and the files to archive.

    ``moved_ok``/``moved_bad``: files ``--move-processed`` takes now, the rejected ones apart;
    known content keeps the verdict it had (rejected before, rejected now). ``summary``
    (``preds_summary``) stands in for ``preds`` when the rows stayed on a worker."""
    files = judged.result.files
    summary = summary if summary is not None else preds_summary(preds)
    pairs = list(zip(files, judged.status, strict=True))
    status = Counter(s for s in judged.status if s)
    status.update(f.skipped for f in files if f.skipped)
    again = [f.path for f, s in pairs if s in ("duplicate", "unchanged")]
    bad = ledger.rejected(again)
    return {"labels": summary["labels"], "warnings": summary["warnings"], "status": status,
            "reasons": Counter(f.reason for f, s in pairs if s == "rejected"),
            "skipped": [(f.path, f.skipped, f.detail) for f in files if f.skipped],
            "frames": summary["frames"], "table": summary["table"],
            "prediction_stats": summary["prediction_stats"],
            "moved_ok": [p for p in again if p not in bad]
            + [f.path for f, s in pairs if s == "classified"],
            "moved_bad": sorted(bad) + [f.path for f, s in pairs if s == "rejected"]}


@dataclass
class RunTally:
    """The sum of a run's chunk stats; ``kept`` holds the columns the run report needs."""

    counters: dict[str, Counter[Any]] = field(
        default_factory=lambda: {k: Counter() for k in COUNTERS})
    frames: int = 0
    parts: int = 0
    moved: int = 0
    skipped: list[tuple[str, str, str | None]] = field(default_factory=list)
    kept: RunFrames = field(default_factory=RunFrames)
    # what the run's monitoring row is built from (tasks/monitor): counts, never frames
    predictions: PredictionStats | None = None
    inputs: InputStats = field(default_factory=InputStats)
    # where the work phase's time went, summed over chunks (infer's stages, and commit)
    stages: Counter[str] = field(default_factory=Counter)

    def add(self, stats: dict[str, Any], parts: int, inputs: InputStats | None = None) -> None:
        for key in COUNTERS:
            self.counters[key].update(stats[key])
        self.frames += stats["frames"]
        self.parts += parts
        self.skipped += stats["skipped"]
        self.kept.add(stats["table"])
        folded = stats.get("prediction_stats")
        if self.predictions is not None and folded is not None:
            self.predictions.merge(folded)
        elif self.predictions is not None:
            self.predictions.add(stats["table"])
        if inputs is not None:
            self.inputs = self.inputs.merge(inputs)


def unread_files(input_dir: str, skipped: list[tuple[str, str, str | None]]
                 ) -> dict[str, Any]:
    """Which skipped files make the run incomplete, and the one-line cause.

    Unreadable files were due and could not be read. A file a worker reported gone while it
    is still here is a cluster set-up error (another mount, another folder), not a file that
    vanished: counting it as vanished would let a run that did nothing say "ok". Both stay
    unprocessed (no ledger entry), so the next run takes them again."""
    loc = Location(input_dir)
    unreachable = [p for p, kind, _ in skipped if kind == "vanished" and loc.exists(p)]
    unreadable = [f"{p} ({d})" for p, kind, d in skipped if kind == "unreadable"]
    bad = unreadable + [f"{p} (here, but missing where it was read)" for p in unreachable]
    message = ""
    if bad:
        message = (f"{len(bad)} file(s) due in {input_dir} could not be read "
                   f"({len(unreadable)} unreadable, {len(unreachable)} missing on the workers "
                   f"though present here), e.g. {bad[0]}; they stay unprocessed for the next "
                   "run")
    return {"unreachable": unreachable, "unreadable": unreadable, "message": message}


class IncompleteRun(RuntimeError):
    """Files that were due could not be read, or frames of lost output parts cannot be
    restored from the input: the run did not do all it was due to do."""


def build_summary(found: dict[str, Any], tally: RunTally, **run: Any) -> RunSummary:
    """The run's summary (the flow's return value, the CLI's output, the artifacts).

    ``found`` is discovery's result (``scan``, ``fresh``, ``known``, ``todo``); ``run`` holds
    ``moved``, ``rec``, ``lost`` (``verify.recover_lost``), ``upkeep``, ``run_id``,
    ``input_dir``, ``output_dir``, ``model_version``, ``seconds`` and ``work_seconds``."""
    scan, fresh, known, todo = found["scan"], found["fresh"], found["known"], found["todo"]
    status, warnings = tally.counters["status"], Counter(tally.counters["warnings"])
    failed = unread_files(run["input_dir"], tally.skipped)
    done_files = sum(status[k] for k in ("classified", "rejected", "duplicate", "unchanged"))
    work, lost = run["work_seconds"], run["lost"]
    problem = "; ".join(m for m in (failed["message"], lost.get("message", "")) if m)
    return {
        "ok": not problem, "problem": problem,
        "flow_run_id": str(run["run_id"]) if run["run_id"] else None,
        "input_dir": run["input_dir"], "output_dir": run["output_dir"],
        "model_version": run["model_version"],
        "files_seen": scan.seen, "not_ready": len(scan.waiting),
        "batches_waiting": scan.waiting_batches, "already_processed": len(known),
        "new": len(fresh), "deferred": len(fresh) - len(todo),
        "backlog": found.get("backlog") or {"files": len(fresh) - len(todo)},
        "classified": status["classified"], "frames": tally.frames,
        "rejected": status["rejected"], "rejected_by_reason": dict(tally.counters["reasons"]),
        "duplicates": status["duplicate"], "unchanged": status["unchanged"],
        "vanished": status["vanished"] - len(failed["unreachable"]),
        "unreadable": status["unreadable"], "unreachable": len(failed["unreachable"]),
        "labels": dict(tally.counters["labels"]),
        # frames flagged out of distribution (models/ood.py), and every warning code's count
        "out_of_distribution": warnings.pop("out_of_distribution", 0),
        "warnings": {k: v for k, v in warnings.items() if v},
        "parts_written": tally.parts, "moved": run["moved"], "reconciled": run["rec"],
        "lost_parts": lost.get("lost_parts", 0), "restorable": lost.get("restorable", 0),
        "unrestorable": lost.get("unrestorable", 0),
        "compacted_partitions": run["upkeep"]["compacted_partitions"],
        "seconds": run["seconds"], "work_seconds": work,
        "stage_seconds": {k: round(v, 3) for k, v in sorted(tally.stages.items())},
        "files_per_second": done_files / work if work > 0 else 0.0,
        "frames_per_second": tally.frames / work if work > 0 else 0.0,
    }
