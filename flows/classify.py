"""The classification flow: new heatmap files in, Parquet predictions out, exactly once.

Orchestration only; the work lives in ``tasks/``. One run:

1. takes the output's lock (one writer per output) and reconciles what a killed run left;
2. discovers complete batches and the files not processed yet (``tasks/classify/discover.py``);
3. classifies them in chunks of many files (``classify-chunk`` tasks on the task runner:
   threads by default, Dask when asked); the next chunk computes while the previous one
   commits (one chunk at a time on threads, one per worker and one queued on Dask);
4. commits each chunk in order, in this process (``commit-chunk``: Parquet parts and ledger
   entries through one commit record; ``tasks/classify/ledger/``); on Dask the workers
   write their chunks' parts into staging themselves and the flow commits only metadata
   (``stage-chunk`` and ``commit-staged``; ``tasks/classify/staged.py``), every chunk that
   is ready when the flow gets to it in one record (group commit: one PUT on ``s3://``);
5. folds the ledger, compacts crowded partitions, publishes the run's summary as a table
   artifact (counts, reasons, throughput) and a markdown artifact (predictions by label and
   confidence, drift against the model's training mix; ``tasks/classify/run_summary.py``).

Tasks are coarse (thousands of frames each): Prefect's per-task cost stays negligible.
Their large arguments (file lists, chunk results) are wrapped so that Prefect does not walk
every element looking for futures, which profiling showed costing seconds of CPU per 10,000
files: ``quote`` for tasks this process runs, ``Bulk`` for the one shipped to the task runner
(the Dask runner hands ``quote`` to the task still wrapped). Sizes (chunk files and bytes,
fold and compaction thresholds) come from the settings.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from flows.runtime.events import emit_monitor_alerts
from flows.runtime.progress import report_files, start_files
from flows.runtime.runners import Bulk, chunks_in_flight, is_done, on_dask
from flows.settings import Settings, get_settings
from models.registry import Registry
from tasks.classify.archive import archive_files, remember_archive
from tasks.classify.discover import (
    Candidate,
    backlog,
    excluded_folders,
    plan_chunks,
    scan_input,
    take,
    unseen,
)
from tasks.classify.engine import choose_engine
from tasks.classify.infer import ChunkResult, classify_files, load_predictor
from tasks.classify.ledger import Ledger, OutputLock, new_commit_id
from tasks.classify.outputs import (
    commit_chunk,
    compact,
    crowded_partitions,
    judge_chunk,
    lineage,
)
from tasks.classify.run_summary import RunSummary, run_markdown, summary_table
from tasks.classify.staged import StagedChunk, commit_staged_group, stage_chunk
from tasks.classify.tally import IncompleteRun, RunTally, build_summary, chunk_stats
from tasks.classify.verify import recover_lost
from tasks.io import faults
from tasks.io.schema import PREDICTIONS
from tasks.io.storage import absolute
from tasks.monitor.history import record_run
from tasks.monitor.predictions import PredictionStats


# -- tasks --------------------------------------------------------------------------------
@task(name="reconcile-output", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def reconcile_output(output_dir: str, fold_at: int, input_dir: str | None = None,
                     archive: str | None = None, flow_run_id: str | None = None
                     ) -> tuple[Ledger, dict[str, int], dict[str, Any]]:
    """Load the ledger and finish or discard what an interrupted run left behind; then
    forget the files of committed parts that are missing or unreadable, so this run
    classifies them again instead of the ledger claiming rows nobody can read."""
    ledger = Ledger.load(output_dir)
    report = ledger.reconcile()
    lost = recover_lost(ledger, input_dir, archive, flow_run_id) if input_dir else {}
    if ledger.fold(min_records=fold_at):
        report["folded"] = 1
    return ledger, report, lost


@task(name="discover-inputs", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def discover_inputs(input_dir: str, quiet_seconds: float, ledger: Ledger,
                    exclude: tuple[str, ...]) -> dict[str, Any]:
    """Complete batches' files, split into new (to read) and known (path, size, mtime)."""
    scan = scan_input(input_dir, quiet_seconds, exclude=exclude)
    fresh, known = unseen(scan.ready, ledger.entries)
    return {"scan": scan, "fresh": fresh, "known": known}


@task(name="classify-chunk", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def classify_chunk(input_dir: str, files: Bulk, registry_dir: str, model_version: str,
                   batch_size: int, max_frames: int, chunk: int, chunks: int,
                   xla: bool = False, engine: str = "auto") -> ChunkResult:
    """Read, validate and classify a chunk of files (runs on the task runner's workers).

    Each model batch moves the progress bar and logs at DEBUG; the flow logs one INFO line
    per chunk when it commits."""
    logger = get_run_logger()

    def on_batch(info: dict[str, Any]) -> None:
        logger.debug("chunk %d/%d, batch %d: %d frames; %d/%d files read; %.1f s", chunk + 1,
                     chunks, info["batch"], info["frames"], info["files_done"], info["files"],
                     info["seconds"])
        report_files(chunk, info["files_done"])

    return classify_files(input_dir, files.value, registry_dir, model_version,
                          batch_size=batch_size, max_frames=max_frames, on_batch=on_batch,
                          jit_compile=xla, engine=engine)


@task(name="commit-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def commit_chunk_task(ledger: Ledger, result: ChunkResult, sizes: dict[str, tuple[int, int]],
                      commit_id: str, flow_run_id: str | None,
                      lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Judge the chunk against the ledger and commit its rows and entries exactly once."""
    judged = judge_chunk(result, ledger)
    record, tables = commit_chunk(ledger, judged, sizes, commit_id, flow_run_id,
                                  lineage=lineage)
    stats = chunk_stats(judged, ledger, tables.get(PREDICTIONS))
    unreadable = [f"{p} ({d})" for p, kind, d in stats["skipped"] if kind == "unreadable"]
    if unreadable:
        get_run_logger().warning("%d file(s) could not be read and will be retried next run: "
                                 "%s", len(unreadable), "; ".join(unreadable[:10]))
    return {**stats, "seq": record.seq, "parts": len(record.parts)}


@task(name="stage-chunk", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def stage_chunk_task(input_dir: str, files: Bulk, registry_dir: str, model_version: str,
                     batch_size: int, max_frames: int, chunk: int, chunks: int, xla: bool,
                     output_dir: str, commit_id: str, flow_run_id: str | None,
                     lineage: dict[str, Any], low_confidence: float,
                     engine: str = "auto", sizes: Bulk | None = None) -> StagedChunk:
    """On a Dask worker: classify a chunk and write its Parquet parts and ledger entries
    into the output; only counts, part names and statistics go back to the flow."""
    result = classify_chunk.fn(input_dir, files, registry_dir, model_version, batch_size,
                               max_frames, chunk, chunks, xla, engine)
    return stage_chunk(output_dir, commit_id, result, flow_run_id, lineage, low_confidence,
                       sizes.value if sizes is not None else None)


@task(name="commit-staged", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def commit_staged_task(ledger: Ledger, staged: list[StagedChunk],
                       sizes: list[dict[str, tuple[int, int]]], flow_run_id: str | None,
                       low_confidence: float) -> list[dict[str, Any]]:
    """Commit the parts of workers' staged chunks that are ready together exactly once,
    with one record for as many as are all new (group commit: one PUT on ``s3://``)."""
    done = commit_staged_group(ledger, staged, sizes, flow_run_id, low_confidence)
    return [{**stats, "seq": record.seq, "parts": len(record.parts)}
            for record, stats in done]


@task(name="move-processed", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def move_processed_files(input_dir: str, dest_dir: str, good: list[str], bad: list[str]) -> int:
    """Move processed files out of the input (rejected ones under ``_rejected/``)."""
    return archive_files(input_dir, dest_dir, good, bad)


@task(name="maintain-output", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def maintain_output(ledger: Ledger, flow_run_id: str | None, fold_at: int,
                    compact_above: int) -> dict[str, int]:
    """Fold the ledger's records; compact day partitions that hold too many parts."""
    folded = ledger.fold(min_records=fold_at)
    stats = {"folded": folded, "compacted_partitions": 0}
    if crowded_partitions(ledger.loc, compact_above):
        ledger.fold()
        res = compact(ledger, min_parts=compact_above + 1, flow_run_id=flow_run_id)
        stats["compacted_partitions"] = res["partitions"]
        ledger.fold()
    return stats


# -- the flow -----------------------------------------------------------------------------
@flow(name="classify", log_prints=False)
def classify_flow(input_dir: str | None = None, output_dir: str | None = None,
                  registry_dir: str | None = None, model_version: str | None = None,
                  batch_size: int | None = None, max_files: int | None = None,
                  move_processed: str | None = None, quiet_seconds: float | None = None,
                  max_frames_per_file: int | None = None, chunk_files: int | None = None,
                  max_bytes: int | None = None, data_root: str | None = None,
                  engine: str | None = None) -> RunSummary:
    """Classify what is new and complete in ``input_dir`` into ``output_dir`` (Parquet).

    Defaults come from the settings (``POSEBATCH_*``, data root ``./data``): input
    ``incoming/``, output ``output/``, registry ``registry/``, the production model.
    ``max_files``/``max_bytes`` cap a run (the oldest batches first); what is left is the
    summary's ``backlog``. ``engine``: ``auto`` (default: ONNX Runtime when the version has a
    verified ``model.onnx``, else Keras), ``keras`` or ``onnx``; chosen once, here.
    """
    t0 = time.perf_counter()
    settings = get_settings(data_root)
    faults.arm(settings.crash_at)
    # Local paths absolute before they travel: a Dask worker would resolve a relative path in
    # its own working folder, find nothing, and the run would classify nothing.
    input_dir = absolute(input_dir or settings.incoming_dir)
    output_dir = absolute(output_dir or settings.output_dir)
    registry_dir = absolute(registry_dir or settings.registry_dir)
    move_processed = absolute(move_processed) if move_processed else None
    quiet = settings.quiet_seconds if quiet_seconds is None else float(quiet_seconds)
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    entry = Registry(registry_dir).resolve(model_version)  # pin one version for the run
    engine, engine_reason = choose_engine(entry, engine or settings.engine)  # and one engine
    get_run_logger().info("model %s on the %s engine (%s)", entry.version, engine, engine_reason)
    job = {"engine": engine, "input_dir": input_dir, "registry_dir": registry_dir,
           "version": entry.version,
           "class_names": entry.class_names, "low_confidence": settings.low_confidence,
           "batch_size": int(batch_size or settings.batch_size), "xla": settings.xla,
           "max_frames": int(max_frames_per_file or settings.max_frames_per_file),
           "move_processed": move_processed, "run_id": run_id, "output_dir": output_dir,
           "lineage": lineage(entry, "classify")}

    with OutputLock(output_dir, settings.lease_seconds):
        ledger, rec, lost = _reconcile(output_dir, settings.fold_at, input_dir,
                                       move_processed, run_id)
        found = _discover(input_dir, quiet, ledger, excluded_folders(input_dir, output_dir,
                          move_processed), max_files, max_bytes, entry.version)
        if move_processed:
            remember_archive(output_dir, move_processed)
        moved = _move_known(ledger, found, input_dir, move_processed)
        chunks = plan_chunks(found["todo"], max(1, chunk_files or settings.chunk_files),
                             settings.chunk_bytes)
        t_work = time.perf_counter()
        tally = _classify_and_commit(chunks, ledger, job)
        work_seconds = time.perf_counter() - t_work
        upkeep = maintain_output(ledger, run_id, settings.fold_at, settings.compact_above)

    summary = build_summary(found, tally, moved=moved + tally.moved, rec=rec, lost=lost,
                            upkeep=upkeep,
                            run_id=run_id, input_dir=input_dir, output_dir=output_dir,
                            model_version=entry.version, seconds=time.perf_counter() - t0,
                            work_seconds=work_seconds)
    summary.update(engine=engine, engine_reason=engine_reason)
    summary["monitoring"] = _monitor(tally, summary, entry.metadata.get("monitor"), settings)
    _publish(summary, run_markdown(summary, tally.kept, entry.metadata,
                                   settings.low_confidence))
    if summary["problem"]:  # the flow run ends Failed: automations and exit codes see it
        raise IncompleteRun(summary["problem"])
    return summary


# -- the flow's steps -----------------------------------------------------------------------
def _reconcile(output_dir: str, fold_at: int, input_dir: str, archive: str | None,
               run_id: Any) -> tuple[Ledger, dict[str, int], dict[str, Any]]:
    """Step 1 (under the lock): the ledger, with what a killed run left finished or undone,
    and the files of lost parts (missing or unreadable) forgotten, to be classified again."""
    logger = get_run_logger()
    ledger, rec, lost = reconcile_output(output_dir, fold_at, input_dir, archive,
                                         str(run_id) if run_id else None)
    if rec["rolled_forward"] or rec["discarded_staging"]:
        logger.info("reconciled an interrupted run: %d part(s) rolled forward, %d "
                    "uncommitted staging folder(s) discarded", rec["rolled_forward"],
                    rec["discarded_staging"])
    if lost.get("lost_parts"):
        logger.warning("%d committed output part(s) missing or unreadable: %d file(s) will be "
                       "classified again from the input, %d cannot be", lost["lost_parts"],
                       lost["restorable"], lost["unrestorable"])
    if lost.get("rescored_lost"):
        logger.warning("%d re-scored file(s) lost with their part: forgotten for that model "
                       "version only; `posebatch rescore --model V` scores them again",
                       lost["rescored_lost"])
    if lost.get("message"):
        logger.warning(lost["message"])
    return ledger, rec, lost


def _discover(input_dir: str, quiet: float, ledger: Ledger, exclude: tuple[str, ...],
              max_files: int | None, max_bytes: int | None, version: str) -> dict[str, Any]:
    """Step 2: complete batches' files, new and known; ``todo`` is this run's share of new
    (the oldest batches first), ``backlog`` what it leaves."""
    found = discover_inputs(input_dir, quiet, ledger, exclude)
    scan, fresh, known = found["scan"], found["fresh"], found["known"]
    todo, left = take(fresh, max_files, max_bytes)
    found = {**found, "todo": todo, "backlog": backlog(left)}
    get_run_logger().info("%d file(s) seen, %d in incomplete batches %s, %d already "
                          "processed, %d new; model %s", scan.seen, len(scan.waiting),
                          scan.waiting_batches, len(known), len(fresh), version)
    return found


def _move_known(ledger: Ledger, found: dict[str, Any], input_dir: str,
                move_processed: str | None) -> int:
    """Files processed by earlier runs but still in the input: moved out when asked."""
    known = found["known"]
    if not (move_processed and known):
        return 0
    bad = ledger.rejected([c.path for c in known])
    return move_processed_files(input_dir, move_processed,
                                quote([c.path for c in known if c.path not in bad]),
                                quote(sorted(bad)))


def _classify_and_commit(chunks: list[list[Candidate]], ledger: Ledger,
                         job: dict[str, Any]) -> RunTally:
    """Steps 3 and 4: classify chunks on the task runner and commit them in order here.

    A window of chunks is in flight (``chunks_in_flight``); each commit refills it first,
    so the next chunk computes while this one commits."""
    start_files(sum(len(c) for c in chunks))
    if chunks and on_dask():  # load the model on each worker as it starts
        from flows.runtime.runners import preload_on_workers

        preload_on_workers(load_predictor, job["registry_dir"], job["version"],
                           job["batch_size"], job["xla"], job["engine"])
    tally, window, pending = RunTally(), chunks_in_flight(), deque()
    tally.predictions = PredictionStats(job["class_names"], job["low_confidence"])
    workers_write = bool(chunks) and on_dask()  # rows stay where they were computed

    def submit(i: int) -> None:
        args = (job["input_dir"], Bulk([(c.path, c.size) for c in chunks[i]]),
                job["registry_dir"], job["version"], job["batch_size"], job["max_frames"], i,
                len(chunks), job["xla"])
        pending.append((i, stage_chunk_task.submit(
            *args, job["output_dir"], new_commit_id(), job["run_id"], job["lineage"],
            job["low_confidence"], job["engine"],
            Bulk({c.path: (c.size, c.mtime_ns) for c in chunks[i]})) if workers_write
            else classify_chunk.submit(*args, job["engine"])))

    for i in range(min(window, len(chunks))):
        submit(i)
    if workers_write and ledger.loc.is_remote:  # parts moved in place off the commit path
        ledger.finalize_in_background()
    try:
        while pending:
            batch = [pending.popleft()]
            while workers_write and pending and is_done(pending[0][1]) and len(batch) < window:
                batch.append(pending.popleft())   # ready too: committed with it (one record)
            results = [(i, fut.result()) for i, fut in batch]
            for i, _ in results:
                if i + window < len(chunks):
                    submit(i + window)  # the next chunks compute while these commit
            t_commit = time.perf_counter()
            sizes = [{c.path: (c.size, c.mtime_ns) for c in chunks[i]} for i, _ in results]
            done = commit_staged_task(ledger, quote([r for _, r in results]), quote(sizes),
                                      job["run_id"], job["low_confidence"]) if workers_write \
                else [commit_chunk_task(ledger, quote(results[0][1]), quote(sizes[0]),
                                        new_commit_id(), job["run_id"], job["lineage"])]
            tally.stages.update({"commit": time.perf_counter() - t_commit})
            for (i, result), stats in zip(results, done, strict=True):
                tally.stages.update(result.seconds)
                report_files(i, len(chunks[i]))
                tally.add(stats, stats["parts"], result.input_stats)
                _log_chunk(i, len(chunks), len(chunks[i]), result, stats)
                if job["move_processed"]:
                    tally.moved += move_processed_files(
                        job["input_dir"], job["move_processed"], quote(stats["moved_ok"]),
                        quote(stats["moved_bad"]))
    finally:
        ledger.flush()
    return tally


def _log_chunk(i: int, n: int, files: int, result: ChunkResult | StagedChunk,
               stats: dict[str, Any]) -> None:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(Counter(stats["status"]).items()))
    get_run_logger().info("chunk %d/%d: %d files, %d frames in %.1f s (model %.1f s); %s; "
                          "committed as #%d", i + 1, n, files, stats["frames"],
                          result.seconds.get("total", 0.0), result.seconds.get("compute", 0.0),
                          counts or "nothing new", stats["seq"])


def _monitor(tally: RunTally, summary: RunSummary, reference: dict[str, Any] | None,
             settings: Settings) -> dict[str, Any]:
    """Step 5: the run's monitoring row (``output/monitoring/runs/``, one per run, rewritten
    if the run is retried) and a ``posebatch.monitor.alert`` event per crossed threshold."""
    assert tally.predictions is not None  # set before the first chunk
    row = record_run(summary["output_dir"], tally.predictions, tally.inputs, reference,
                     {"flow_run_id": summary["flow_run_id"] or "local",
                      "model_version": summary["model_version"],
                      "files": summary["classified"], "files_rejected": summary["rejected"],
                      "seconds": summary["work_seconds"], "kind": "classify"})
    sent = emit_monitor_alerts(row, settings.monitor_psi_threshold,
                               settings.monitor_min_est_accuracy)
    crossed = [e["payload"]["reason"] for e in sent]
    if crossed:
        get_run_logger().warning("monitoring: %s", "; ".join(crossed))
    return {"est_accuracy": row["est_accuracy"], "est_macro_f1": row["est_macro_f1"],
            "input_psi": row["input_psi"], "alerts": crossed,
            "path": row["path"]}


def _publish(summary: RunSummary, markdown: str) -> None:
    """Step 5: the summary as a table artifact, the predictions report as markdown."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    where = f"posebatch classify into {summary['output_dir']}"
    create_table_artifact(table=summary_table(summary), key="classify-summary",
                          description=where)
    create_markdown_artifact(markdown=markdown, key="classify-report",
                             description=f"{where}: predictions by label, drift")


__all__ = ["classify_flow", "IncompleteRun"]
