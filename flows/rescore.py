"""The re-scoring flow: frames already classified, scored again by another model version.

Orchestration only; the rules live in ``tasks/classify/rescore.py``. One run:

1. takes the output's lock and reconciles what a killed run left (the classify flow's step);
2. plans: the classified files matching the filters that the version has not scored yet
   (the ledger knows every file's content, day and batch), and where their inputs are now
   (input folder, or the ``--move-processed`` archive);
3. reads and scores them in chunks on the task runner (``classify-chunk``, the classify
   flow's own task), and commits each chunk's rows with ``rescored`` ledger entries: exactly
   once per (content, frame, model version), so a killed run resumes with what is left;
4. appends the run's monitoring row (``kind = rescore``) and publishes its summary.

``dry_run`` stops after step 2 and says what would be read and what cannot be found.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from flows.classify import classify_chunk, reconcile_output
from flows.runtime.progress import report_files, start_files
from flows.runtime.runners import Bulk
from flows.settings import get_settings
from models.registry import Registry
from tasks.classify.archive import known_archive
from tasks.classify.discover import Candidate, batch_of, plan_chunks
from tasks.classify.engine import choose_engine
from tasks.classify.infer import ChunkResult
from tasks.classify.ledger import Ledger, OutputLock, new_commit_id
from tasks.classify.outputs import commit_chunk, lineage
from tasks.classify.rescore import Target, judge, locate, plan
from tasks.io.schema import PREDICTIONS
from tasks.io.storage import absolute
from tasks.monitor.history import record_run
from tasks.monitor.inputs import InputStats
from tasks.monitor.predictions import PredictionStats

REPORTED = ("changed", "rejected", "unreadable", "already")


class RescoreSummary(TypedDict):
    """One re-scoring run's facts (the flow's return value, the CLI's ``--json``)."""

    ok: bool
    problem: str
    dry_run: bool
    flow_run_id: str | None
    output_dir: str
    model_version: str
    selected_files: int           # matching files the version has not scored
    selected_frames: int
    already_scored: int           # matching files the version had scored before this run
    found_files: int              # of the selected, inputs found (input folder or archive)
    in_archive: int
    missing: int                  # selected files whose input is nowhere: not re-scored
    missing_files: list[str]      # the first of them
    rescored_files: int
    frames: int                   # rows written
    skipped: dict[str, int]       # changed, rejected, unreadable, already: not re-scored
    seconds: float
    work_seconds: float
    frames_per_second: float
    engine: str                   # keras or onnx (tasks/classify/engine.py), and why
    engine_reason: str


@task(name="commit-rescore", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def commit_rescore(ledger: Ledger, result: ChunkResult, targets: dict[str, Target],
                   commit_id: str, flow_run_id: str | None, version: str,
                   lineage_: dict[str, Any]) -> dict[str, Any]:
    """Judge a scored chunk (content still the recorded one, not scored meanwhile) and commit
    its rows and ``rescored`` entries exactly once."""
    judged, report = judge(result, targets, ledger, version)
    sizes = {t.path: (t.size, t.mtime_ns) for t in targets.values()}
    _, tables = commit_chunk(ledger, judged, sizes, commit_id, flow_run_id, lineage=lineage_)
    preds = tables.get(PREDICTIONS)
    return {"files": sum(1 for s in judged.status if s), "table": preds,
            "frames": int(preds.num_rows) if preds is not None else 0,
            "report": {k: len(v) for k, v in report.items()},
            "examples": [p for k in REPORTED for p in report[k][:3]]}


@flow(name="rescore", log_prints=False)
def rescore_flow(model_version: str | None = None, since: str | None = None,
                 until: str | None = None, batch: str | None = None, path: str | None = None,
                 label: list[str] | None = None, max_confidence: float | None = None,
                 since_days: int | None = None, dry_run: bool = False,
                 input_dir: str | None = None, output_dir: str | None = None,
                 registry_dir: str | None = None, archive_dir: str | None = None,
                 batch_size: int | None = None, lock_wait_seconds: float = 0,
                 data_root: str | None = None, engine: str | None = None) -> RescoreSummary:
    """Score classified frames again with ``model_version`` (default: production), selected
    by the day they were classified (``since``/``until``, ``YYYY-MM-DD``), ``batch``, a
    ``path`` glob, the current ``label`` or a ``max_confidence`` of any of their frames; new
    rows next to the old ones. ``archive_dir`` defaults to the last ``--move-processed``
    folder the classify flow used on this output. ``since_days``: the last N days (the
    after-promotion deployment's window), when ``since`` is not given.
    ``lock_wait_seconds``: wait this long for another run holding the output's lock (the
    deployment waits an hour for the nightly run; the CLI fails at once). ``engine``: as the
    classify flow's (``tasks/classify/engine.py``), chosen once here."""
    t0 = time.perf_counter()
    settings = get_settings(data_root)
    input_dir = absolute(input_dir or settings.incoming_dir)
    output_dir = absolute(output_dir or settings.output_dir)
    archive_dir = absolute(archive_dir) if archive_dir else None
    registry_dir = absolute(registry_dir or settings.registry_dir)
    entry = Registry(registry_dir).resolve(model_version)
    engine, engine_reason = choose_engine(entry, engine or settings.engine)
    get_run_logger().info("model %s on the %s engine (%s)", entry.version, engine, engine_reason)
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    archive_dir = archive_dir or known_archive(output_dir)
    if since is None and since_days is not None:
        since = (datetime.now(UTC) - timedelta(days=since_days)).date().isoformat()
    keep = _by_prediction(output_dir, label, max_confidence,
                          Registry(registry_dir).production_version())
    legacy = entry.version in _versions_in(output_dir)
    if dry_run:  # read only: no lock, nothing reconciled, folded or written
        targets, already, found, missing = _plan(Ledger.load(output_dir), entry.version,
                                                 input_dir, archive_dir, legacy, since=since,
                                                 until=until, batch=batch, path=path, only=keep)
        done, work = {"files": 0, "frames": 0, "report": dict.fromkeys(REPORTED, 0)}, 0.0
    else:
        with OutputLock(output_dir, settings.lease_seconds).acquire_within(lock_wait_seconds):
            ledger, _, _ = reconcile_output(output_dir, settings.fold_at)
            targets, already, found, missing = _plan(ledger, entry.version, input_dir,
                                                     archive_dir, legacy, since=since,
                                                     until=until, batch=batch, path=path,
                                                     only=keep)
            t_work = time.perf_counter()
            done = {"files": 0, "frames": 0, "report": dict.fromkeys(REPORTED, 0)}
            if found:
                done = _score(found, ledger, entry, registry_dir, settings, run_id,
                              int(batch_size or settings.batch_size), engine)
            work = time.perf_counter() - t_work
            ledger.fold(min_records=settings.fold_at)
    summary = _summary(entry.version, targets, found, missing, already, done, dry_run,
                       run_id=run_id, output_dir=output_dir, archive=archive_dir,
                       seconds=time.perf_counter() - t0, work=work)
    summary.update(engine=engine, engine_reason=engine_reason)
    _publish(summary, done.get("stats"), done.get("inputs"), entry.metadata.get("monitor"))
    if summary["problem"]:
        raise RuntimeError(summary["problem"])
    return summary


def _versions_in(output_dir: str) -> list[str]:
    """The model versions the predictions hold (file footers; none yet: empty)."""
    from tasks.read.query import QueryError, model_versions_in

    try:
        return model_versions_in(output_dir)
    except QueryError:
        return []


def _plan(ledger: Ledger, version: str, input_dir: str, archive: str | None, legacy: bool,
          **filters: Any) -> tuple[list[Target], int, list[Target], list[Target]]:
    """Step 2: (to score, scored before, found, missing), logged."""
    targets, already = plan(ledger.entries, version, legacy_scored=legacy, **filters)
    found, missing = locate(targets, input_dir, archive)
    _log_plan(version, targets, found, missing, already, archive)
    return targets, already, found, missing


def _by_prediction(output_dir: str, label: list[str] | None, max_confidence: float | None,
                   production: str | None) -> set[tuple[str, str]] | None:
    """(path, sha256) of the files with a frame whose current row (production's, else the
    latest) has ``label`` or at most ``max_confidence``."""
    if not label and max_confidence is None:
        return None
    from tasks.read.query import read_predictions

    table = read_predictions(output_dir, labels=label, max_confidence=max_confidence,
                             columns=["source_path", "content_sha256"], production=production)
    return set(zip(table["source_path"].to_pylist(), table["content_sha256"].to_pylist(),
                   strict=True))


def _log_plan(version: str, targets: list[Target], found: list[Target],
              missing: list[Target], already: int, archive: str | None) -> None:
    logger = get_run_logger()
    logger.info("re-scoring with %s: %d file(s) (%d frame(s)) to score, %d scored before; "
                "%d found (%d in the archive), %d missing", version, len(targets),
                sum(t.frames for t in targets), already, len(found),
                sum(1 for t in found if archive and t.base == archive), len(missing))
    if missing:
        logger.warning("%d file(s) to re-score are in neither the input nor the archive, "
                       "e.g. %s: not re-scored", len(missing), missing[0].path)


def _score(found: list[Target], ledger: Ledger, entry: Any, registry: str, settings: Any,
           run_id: Any, batch_size: int, engine: str = "auto") -> dict[str, Any]:
    """Steps 3: chunks per folder, the next one scored while this one commits."""
    chunks = [(base, c) for base in dict.fromkeys(t.base for t in found)
              for c in plan_chunks([Candidate(t.rel, batch_of(t.rel), t.size, t.mtime_ns)
                                    for t in found if t.base == base],
                                   settings.chunk_files, settings.chunk_bytes)]
    by_rel = {(t.base, t.rel): t for t in found}
    rows = lineage(entry, "rescore")
    done: dict[str, Any] = {"files": 0, "frames": 0, "report": dict.fromkeys(REPORTED, 0),
                            "stats": PredictionStats(entry.class_names,
                                                     settings.low_confidence),
                            "inputs": InputStats()}
    start_files(len(found))

    def submit(i: int) -> Any:
        base, chunk = chunks[i]
        return classify_chunk.submit(base, Bulk([(c.path, c.size) for c in chunk]), registry,
                                     entry.version, batch_size, settings.max_frames_per_file,
                                     i, len(chunks), settings.xla, engine)

    pending = submit(0)
    for i, (base, chunk) in enumerate(chunks):
        result = pending.result()
        if i + 1 < len(chunks):
            pending = submit(i + 1)
        stats = commit_rescore(ledger, quote(result),
                               quote({c.path: by_rel[(base, c.path)] for c in chunk}),
                               new_commit_id(), str(run_id) if run_id else None,
                               entry.version, rows)
        report_files(i, len(chunk))
        done["files"] += stats["files"]
        done["frames"] += stats["frames"]
        done["stats"].add(stats["table"])
        done["inputs"] = done["inputs"].merge(result.input_stats)
        for k, n in stats["report"].items():
            done["report"][k] += n
    return done


def _summary(version: str, targets: list[Target], found: list[Target], missing: list[Target],
             already: int, done: dict[str, Any], dry_run: bool, **run: Any) -> RescoreSummary:
    """The run's facts; ``problem`` when something was due and nothing could be done."""
    work = run["work"]
    problem = ""
    if dry_run:  # a dry run reports; it never fails for what it found
        pass
    elif targets and not found:
        problem = (f"none of the {len(targets)} file(s) to re-score is in the input or the "
                   f"archive (e.g. {missing[0].path}): nothing re-scored")
    elif found and done["files"] == 0 and done["report"]["already"] == 0:
        problem = (f"{len(found)} file(s) found but none could be re-scored "
                   f"({', '.join(f'{n} {k}' for k, n in done['report'].items() if n)})")
    return {"ok": not problem, "problem": problem, "dry_run": dry_run,
            "flow_run_id": str(run["run_id"]) if run["run_id"] else None,
            "output_dir": run["output_dir"], "model_version": version,
            "selected_files": len(targets), "selected_frames": sum(t.frames for t in targets),
            "already_scored": already, "found_files": len(found),
            "in_archive": sum(1 for t in found if run["archive"] and t.base == run["archive"]),
            "missing": len(missing), "missing_files": [t.path for t in missing[:20]],
            "rescored_files": done["files"], "frames": done["frames"],
            "skipped": dict(done["report"]), "seconds": run["seconds"], "work_seconds": work,
            "frames_per_second": done["frames"] / work if work > 0 else 0.0}


def _publish(summary: RescoreSummary, stats: PredictionStats | None,
             inputs: InputStats | None, reference: dict[str, Any] | None) -> None:
    """The monitoring row (a real run; drift against the model's own reference) and the
    summary as a table artifact."""
    from prefect.artifacts import create_table_artifact

    if stats is not None and not summary["dry_run"]:
        record_run(summary["output_dir"], stats, inputs, reference,
                   {"flow_run_id": summary["flow_run_id"] or "local", "kind": "rescore",
                    "model_version": summary["model_version"],
                    "files": summary["rescored_files"], "seconds": summary["work_seconds"]})
    rows = [{"metric": k, "value": str(v)} for k, v in summary.items()
            if k not in ("missing_files",)]
    create_table_artifact(table=rows, key="rescore-summary",
                          description=f"posebatch rescore into {summary['output_dir']}")
