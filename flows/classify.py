"""The classification flow: new heatmap files in, Parquet predictions out, exactly once.

Orchestration only; the work lives in ``tasks/``. One run:

1. takes the output's lock (one writer per output) and reconciles what a killed run left;
2. discovers complete batches and the files not processed yet (``tasks/classify/discover.py``);
3. classifies them in chunks of many files (``classify-chunk`` tasks on the task runner:
   threads by default, Dask when asked); the next chunk computes while the previous one
   commits (one chunk at a time on threads, one per worker and one queued on Dask);
4. commits each chunk in order, in this process (``commit-chunk``: Parquet parts and ledger
   entries through one commit record; ``tasks/classify/ledger.py``);
5. folds the ledger, compacts crowded partitions, publishes the run's summary as a table
   artifact (counts, reasons, throughput) and a markdown artifact (predictions by label and
   confidence, drift against the model's training mix; ``tasks/classify/run_summary.py``).

Tasks are coarse (thousands of frames each): Prefect's per-task cost stays negligible.
Their large arguments (file lists, chunk results) are wrapped so that Prefect does not walk
every element looking for futures, which profiling showed costing seconds of CPU per 10,000
files: ``quote`` for tasks this process runs, ``Bulk`` for the one shipped to the task runner
(the Dask runner hands ``quote`` to the task still wrapped).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from flows.settings import get_settings
from models.ood import CODES as OOD_CODES
from models.registry import Registry
from tasks.classify.discover import Candidate, scan_input, unseen
from tasks.classify.infer import ChunkResult, classify_files, load_predictor
from tasks.classify.ledger import Ledger, OutputLock, new_commit_id
from tasks.classify.outputs import commit_chunk, compact, crowded_partitions, judge_chunk
from tasks.classify.run_summary import (
    RunFrames,
    RunSummary,
    format_summary,
    run_markdown,
    summary_table,
)
from tasks.classify.verify import recover_lost
from tasks.io.schema import PREDICTIONS
from tasks.io.storage import Location, is_remote

CHUNK_FILES = 2048          # files per classify-chunk task: a few thousand frames
CHUNK_BYTES = 512 << 20     # and at most this much input per chunk
COMPACT_ABOVE = 32          # auto-compact a day partition holding more parts than this
FOLD_AT = 16                # fold ledger records into a segment once this many exist

# -- progress for an in-process caller (the CLI's progress bar) ------------------------------
_listeners: list[Callable[[int, int], None]] = []


def add_progress_listener(fn: Callable[[int, int], None]) -> Callable[[], None]:
    """Call ``fn(files_done, files_total)`` as the flow advances; returns a remover."""
    _listeners.append(fn)
    return lambda: _listeners.remove(fn) if fn in _listeners else None


class _Progress:
    def __init__(self, total: int):
        self.total = total
        self.done: dict[int, int] = {}
        self.lock = threading.Lock()

    def update(self, chunk: int, files_done: int) -> None:
        with self.lock:
            self.done[chunk] = max(self.done.get(chunk, 0), files_done)
            done = sum(self.done.values())
        for fn in list(_listeners):
            fn(done, self.total)


_progress = _Progress(0)
T = TypeVar("T")


def _start_progress(total: int) -> None:
    global _progress
    _progress = _Progress(total)


def _report_progress(chunk: int, files_done: int) -> None:
    """Tell this process's listeners. The flow and its tasks call these two functions instead
    of naming ``_progress``: on Dask, Prefect pickles the task and the flow (its context) with
    the globals they name, and ``_progress`` holds a lock. (On a worker this updates the
    worker's own, listener-less copy.)"""
    _progress.update(chunk, files_done)


class Bulk(Generic[T]):
    """A value Prefect passes to a task without walking it (it walks lists, dicts and
    dataclasses). Picklable, so it crosses to Dask workers; the task unwraps ``.value``."""

    __slots__ = ("value",)

    def __init__(self, value: T):
        self.value = value


# -- tasks --------------------------------------------------------------------------------
@task(name="reconcile-output", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def reconcile_output(output_dir: str, input_dir: str | None = None,
                     archive: str | None = None, flow_run_id: str | None = None
                     ) -> tuple[Ledger, dict[str, int], dict[str, Any]]:
    """Load the ledger and finish or discard what an interrupted run left behind; then
    forget the files of committed parts that are missing or unreadable, so this run
    classifies them again instead of the ledger claiming rows nobody can read."""
    ledger = Ledger.load(output_dir)
    report = ledger.reconcile()
    lost = recover_lost(ledger, input_dir, archive, flow_run_id) if input_dir else {}
    if ledger.fold(min_records=FOLD_AT):
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
def classify_chunk(input_dir: str, files: Bulk[list[tuple[str, int]]], registry_dir: str,
                   model_version: str, batch_size: int, max_frames: int, chunk: int,
                   chunks: int) -> ChunkResult:
    """Read, validate and classify a chunk of files (runs on the task runner's workers).

    Each model batch moves the progress bar and logs at DEBUG; the flow logs one INFO line
    per chunk when it commits."""
    logger = get_run_logger()

    def on_batch(info: dict[str, Any]) -> None:
        logger.debug("chunk %d/%d, batch %d: %d frames; %d/%d files read; %.1f s", chunk + 1,
                     chunks, info["batch"], info["frames"], info["files_done"], info["files"],
                     info["seconds"])
        _report_progress(chunk, info["files_done"])

    return classify_files(input_dir, files.value, registry_dir, model_version,
                          batch_size=batch_size, max_frames=max_frames, on_batch=on_batch)


@task(name="commit-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def commit_chunk_task(ledger: Ledger, result: ChunkResult, sizes: dict[str, tuple[int, int]],
                      commit_id: str, flow_run_id: str | None) -> dict[str, Any]:
    """Judge the chunk against the ledger and commit its rows and entries exactly once."""
    judged = judge_chunk(result, ledger)
    record, tables = commit_chunk(ledger, judged, sizes, commit_id, flow_run_id)
    preds = tables.get(PREDICTIONS)
    labels = Counter(preds.column("label").to_pylist()) if preds is not None else Counter()
    flags = preds.column("warnings").to_pylist() if preds is not None else []
    warnings = Counter(code for codes in flags for code in codes)
    warnings["out_of_distribution"] = sum(1 for codes in flags if set(codes) & set(OOD_CODES))
    reasons = Counter(f.reason for f, s in zip(result.files, judged.status, strict=True)
                      if s == "rejected")
    status = Counter(s for s in judged.status if s)
    status.update(f.skipped for f in result.files if f.skipped)
    unreadable = [f"{f.path} ({f.detail})" for f in result.files if f.skipped == "unreadable"]
    if unreadable:
        get_run_logger().warning("%d file(s) could not be read and will be retried next run: "
                                 "%s", len(unreadable), "; ".join(unreadable[:10]))
    again = [f.path for f, s in zip(result.files, judged.status, strict=True)
             if s in ("duplicate", "unchanged")]
    bad = ledger.rejected(again)  # known content: rejected before, rejected now
    return {"seq": record.seq, "parts": len(record.parts), "labels": labels, "table": preds,
            "reasons": reasons, "status": status, "warnings": warnings,
            "skipped": [(f.path, f.skipped, f.detail) for f in result.files if f.skipped],
            "frames": int(preds.num_rows) if preds is not None else 0,
            "moved_ok": [p for p in again if p not in bad] + [
                f.path for f, s in zip(result.files, judged.status, strict=True)
                if s == "classified"],
            "moved_bad": sorted(bad) + [
                f.path for f, s in zip(result.files, judged.status, strict=True)
                if s == "rejected"]}


def _absolute(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)


def free_name(dst: Path) -> Path:
    """``dst`` if no file has that name, else ``<stem>.<ns time>[.<n>]<suffix>`` that none has:
    an archive never overwrites, however many copies of a name arrive within one second."""
    if not dst.exists():
        return dst
    stamp = time.time_ns()
    for n in range(1_000_000):
        candidate = dst.with_name(f"{dst.stem}.{stamp}{f'.{n}' if n else ''}{dst.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free archive name for {dst}")


@task(name="move-processed", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def move_processed_files(input_dir: str, dest_dir: str, good: list[str], bad: list[str]) -> int:
    """Move processed files out of the input (rejected ones under ``_rejected/``)."""
    if Location(input_dir).is_remote or Location(dest_dir).is_remote:
        raise ValueError("--move-processed works on local folders only")
    moved = 0
    for rels, sub in ((good, ""), (bad, "_rejected")):
        for rel in rels:
            src = Path(input_dir, rel)
            dst = Path(dest_dir, sub, rel) if sub else Path(dest_dir, rel)
            if not src.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst = free_name(dst)  # an older archived copy of the same name is kept too
            try:
                os.replace(src, dst)
            except OSError:  # another file system: copy then delete
                import shutil

                shutil.move(str(src), str(dst))
            moved += 1
    return moved


@task(name="maintain-output", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def maintain_output(ledger: Ledger, flow_run_id: str | None) -> dict[str, int]:
    """Fold the ledger's records; compact day partitions that hold too many parts."""
    folded = ledger.fold(min_records=FOLD_AT)
    stats = {"folded": folded, "compacted_partitions": 0}
    if crowded_partitions(ledger.loc, COMPACT_ABOVE):
        ledger.fold()
        res = compact(ledger, min_parts=COMPACT_ABOVE + 1, flow_run_id=flow_run_id)
        stats["compacted_partitions"] = res["partitions"]
        ledger.fold()
    return stats


# -- helpers ------------------------------------------------------------------------------
def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counter.items())) or "nothing new"


def _chunks(files: list[Candidate], max_files: int, max_bytes: int) -> list[list[Candidate]]:
    out: list[list[Candidate]] = []
    cur: list[Candidate] = []
    size = 0
    for c in files:
        if cur and (len(cur) >= max_files or size + c.size > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(c)
        size += c.size
    if cur:
        out.append(cur)
    return out


def _inside(child: str | None, parent: str) -> str | None:
    """``child`` relative to ``parent`` when it lies inside it (local paths), else None."""
    if not child or Location(parent).is_remote or Location(child).is_remote:
        return None
    try:
        rel = Path(child).resolve().relative_to(Path(parent).resolve())
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


def _parallel_chunks() -> int:
    """Chunks classified at once: one on threads, workers + 1 on Dask.

    On threads one chunk at a time already keeps every core busy (reader threads feed the
    model, which uses all cores) and the next chunk starts as soon as one is classified, so
    its compute overlaps the previous commit. Two side by side would only double the
    read-ahead memory (and make a small run's memory unlike a large one's)."""
    try:
        from prefect.context import FlowRunContext

        runner = getattr(FlowRunContext.get(), "task_runner", None)
        client = getattr(runner, "_client", None) or getattr(runner, "client", None)
        if client is not None:
            return max(2, len(client.scheduler_info().get("workers", {})) + 1)
    except Exception:  # noqa: BLE001 - any failure: the threaded default
        pass
    return 1


def _preload(registry_dir: str, version: str, batch_size: int) -> None:
    """Load the model on Dask workers as they start (no-op on threads; see flows/runners).

    On threads it returns before importing anything: Dask's client libraries take half a
    second of CPU to import, for nothing."""
    from prefect.context import FlowRunContext

    runner = getattr(FlowRunContext.get(), "task_runner", None)
    if not type(runner).__module__.startswith("prefect_dask"):
        return
    try:
        from flows.runtime.runners import preload_on_workers
    except ImportError:
        return
    preload_on_workers(load_predictor, registry_dir, version, batch_size)


# -- the flow -----------------------------------------------------------------------------
@flow(name="classify", log_prints=False)
def classify_flow(input_dir: str | None = None, output_dir: str | None = None,
                  registry_dir: str | None = None, model_version: str | None = None,
                  batch_size: int | None = None, max_files: int | None = None,
                  move_processed: str | None = None, quiet_seconds: float | None = None,
                  max_frames_per_file: int | None = None, chunk_files: int = CHUNK_FILES,
                  data_root: str | None = None) -> RunSummary:
    """Classify what is new and complete in ``input_dir`` into ``output_dir`` (Parquet).

    Defaults come from the settings (``POSEBATCH_*``, data root ``./data``): input
    ``incoming/``, output ``output/``, registry ``registry/``, the production model.
    """
    t0 = time.perf_counter()
    settings = get_settings(data_root)
    # Local paths absolute before they travel: a Dask worker would resolve a relative path in
    # its own working folder, find nothing, and the run would classify nothing.
    input_dir = _absolute(str(input_dir or settings.incoming_dir))
    output_dir = _absolute(str(output_dir or settings.output_dir))
    registry_dir = _absolute(str(registry_dir or settings.registry_dir))
    move_processed = _absolute(move_processed) if move_processed else move_processed
    batch_size = int(batch_size or settings.batch_size)
    quiet = settings.quiet_seconds if quiet_seconds is None else float(quiet_seconds)
    max_frames = int(max_frames_per_file or settings.max_frames_per_file)
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    entry = Registry(registry_dir).resolve(model_version)  # pin one version for the run
    exclude = tuple(x for x in (_inside(output_dir, input_dir),
                                _inside(move_processed, input_dir)) if x)

    with OutputLock(output_dir):
        ledger, rec, lost = _reconcile(output_dir, input_dir, move_processed, run_id)
        found = _discover(input_dir, quiet, ledger, exclude, max_files, entry.version)
        moved = _move_known(ledger, found, input_dir, move_processed)
        chunks = _chunks(found["todo"], max(1, chunk_files), CHUNK_BYTES)
        _start_progress(len(found["todo"]))
        if chunks:
            _preload(registry_dir, entry.version, batch_size)
        t_work = time.perf_counter()
        done = _classify_and_commit(chunks, ledger, input_dir, registry_dir, entry.version,
                                    batch_size, max_frames, move_processed, run_id)
        work_seconds = time.perf_counter() - t_work
        upkeep = maintain_output(ledger, run_id)

    summary = _run_summary(found, done, moved=moved + done["moved"], rec=rec, lost=lost,
                           upkeep=upkeep,
                           run_id=run_id, input_dir=input_dir, output_dir=output_dir,
                           model_version=entry.version, seconds=time.perf_counter() - t0,
                           work_seconds=work_seconds)
    _publish(summary, run_markdown(summary, done["kept"], entry.metadata,
                                   settings.low_confidence))
    if summary["problem"]:  # the flow run ends Failed: automations and exit codes see it
        raise IncompleteRun(summary["problem"])
    return summary


# -- the flow's steps -----------------------------------------------------------------------
def _reconcile(output_dir: str, input_dir: str, archive: str | None, run_id: Any
               ) -> tuple[Ledger, dict[str, int], dict[str, Any]]:
    """Step 1 (under the lock): the ledger, with what a killed run left finished or undone,
    and the files of lost parts (missing or unreadable) forgotten, to be classified again."""
    logger = get_run_logger()
    ledger, rec, lost = reconcile_output(output_dir, input_dir, archive,
                                         str(run_id) if run_id else None)
    if rec["rolled_forward"] or rec["discarded_staging"]:
        logger.info("reconciled an interrupted run: %d part(s) rolled forward, %d "
                    "uncommitted staging folder(s) discarded", rec["rolled_forward"],
                    rec["discarded_staging"])
    if lost.get("lost_parts"):
        logger.warning("%d committed output part(s) missing or unreadable: %d file(s) will be "
                       "classified again from the input, %d cannot be", lost["lost_parts"],
                       lost["restorable"], lost["unrestorable"])
    if lost.get("message"):
        logger.warning(lost["message"])
    return ledger, rec, lost


def _discover(input_dir: str, quiet: float, ledger: Ledger, exclude: tuple[str, ...],
              max_files: int | None, version: str) -> dict[str, Any]:
    """Step 2: complete batches' files, new and known; ``todo`` is this run's share of new."""
    found = discover_inputs(input_dir, quiet, ledger, exclude)
    scan, fresh, known = found["scan"], found["fresh"], found["known"]
    found = {**found, "todo": fresh[:max_files] if max_files is not None else fresh}
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


def _classify_and_commit(chunks: list[list[Candidate]], ledger: Ledger, input_dir: str,
                         registry_dir: str, version: str, batch_size: int, max_frames: int,
                         move_processed: str | None, run_id: Any) -> dict[str, Any]:
    """Steps 3 and 4: classify chunks on the task runner and commit them in order here.

    A window of chunks is in flight (``_parallel_chunks``); each commit refills it first, so
    the next chunk computes while this one commits. Returns the tallies of what was
    committed: counters, frames, parts, files moved, and the kept prediction columns."""
    logger = get_run_logger()
    tally: dict[str, Counter[Any]] = {"labels": Counter(), "reasons": Counter(),
                                       "status": Counter(), "warnings": Counter()}
    frames = parts = moved = 0
    skipped: list[tuple[str, str, str | None]] = []
    kept = RunFrames()
    window = _parallel_chunks()
    pending: deque[tuple[int, Any]] = deque()
    nxt = 0

    def fill_window() -> None:
        nonlocal nxt
        while nxt < len(chunks) and len(pending) < window:
            files = [(c.path, c.size) for c in chunks[nxt]]
            pending.append((nxt, classify_chunk.submit(
                input_dir, Bulk(files), registry_dir, version, batch_size,
                max_frames, nxt, len(chunks))))
            nxt += 1

    fill_window()
    while pending:
        i, fut = pending.popleft()
        result = fut.result()
        fill_window()  # the next chunk computes while this one commits
        sizes = {c.path: (c.size, c.mtime_ns) for c in chunks[i]}
        stats = commit_chunk_task(ledger, quote(result), quote(sizes), new_commit_id(),
                                  run_id)
        _report_progress(i, len(chunks[i]))
        for key in tally:
            tally[key].update(stats[key])
        frames += stats["frames"]
        skipped += stats["skipped"]
        kept.add(stats["table"])
        parts += stats["parts"]
        logger.info("chunk %d/%d: %d files, %d frames in %.1f s (model %.1f s); %s; "
                    "committed as #%d", i + 1, len(chunks), len(chunks[i]),
                    stats["frames"], result.seconds.get("total", 0.0),
                    result.seconds.get("compute", 0.0), _counts(stats["status"]),
                    stats["seq"])
        if move_processed:
            moved += move_processed_files(input_dir, move_processed,
                                          quote(stats["moved_ok"]),
                                          quote(stats["moved_bad"]))
    return {"tally": tally, "frames": frames, "parts": parts, "moved": moved, "kept": kept,
            "skipped": skipped}


def _run_summary(found: dict[str, Any], done: dict[str, Any], *, moved: int,
                 rec: dict[str, int], lost: dict[str, Any], upkeep: dict[str, int],
                 run_id: Any, input_dir: str,
                 output_dir: str, model_version: str, seconds: float,
                 work_seconds: float) -> RunSummary:
    """Step 5: the run's summary (the flow's return value, the CLI's output, the artifacts)."""
    scan, fresh, known, todo = found["scan"], found["fresh"], found["known"], found["todo"]
    tally, frames = done["tally"], done["frames"]
    status = tally["status"]
    failed = unread_files(input_dir, done["skipped"])
    done_files = sum(status[k] for k in ("classified", "rejected", "duplicate", "unchanged"))
    problem = "; ".join(m for m in (failed["message"], lost.get("message", "")) if m)
    return {
        "ok": not problem, "problem": problem,
        "flow_run_id": str(run_id) if run_id else None,
        "input_dir": input_dir, "output_dir": output_dir, "model_version": model_version,
        "files_seen": scan.seen, "not_ready": len(scan.waiting),
        "batches_waiting": scan.waiting_batches, "already_processed": len(known),
        "new": len(fresh), "deferred": len(fresh) - len(todo),
        "classified": status["classified"], "frames": frames,
        "rejected": status["rejected"], "rejected_by_reason": dict(tally["reasons"]),
        "duplicates": status["duplicate"], "unchanged": status["unchanged"],
        "vanished": status["vanished"] - len(failed["unreachable"]),
        "unreadable": status["unreadable"], "unreachable": len(failed["unreachable"]),
        "labels": dict(tally["labels"]),
        # frames flagged out of distribution (models/ood.py), and every warning code's count
        "out_of_distribution": tally["warnings"].pop("out_of_distribution", 0),
        "warnings": {k: v for k, v in tally["warnings"].items() if v},
        "parts_written": done["parts"], "moved": moved, "reconciled": rec,
        "lost_parts": lost.get("lost_parts", 0), "restorable": lost.get("restorable", 0),
        "unrestorable": lost.get("unrestorable", 0),
        "compacted_partitions": upkeep["compacted_partitions"],
        "seconds": seconds, "work_seconds": work_seconds,
        "files_per_second": done_files / work_seconds if work_seconds > 0 else 0.0,
        "frames_per_second": frames / work_seconds if work_seconds > 0 else 0.0,
    }


class IncompleteRun(RuntimeError):
    """Files that were due could not be read, or frames of lost output parts cannot be
    restored from the input: the run did not do all it was due to do."""


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


__all__ = ["classify_flow", "add_progress_listener", "format_summary", "summary_table"]


def _publish(summary: dict[str, Any], markdown: str) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    where = f"posebatch classify into {summary['output_dir']}"
    create_table_artifact(table=summary_table(summary), key="classify-summary",
                          description=where)
    create_markdown_artifact(markdown=markdown, key="classify-report",
                             description=f"{where}: predictions by label, drift")
