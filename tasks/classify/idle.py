"""A classify run with nothing to do, done without Prefect.

A watch loop or a schedule every few minutes mostly finds nothing new; starting Prefect
(its server, the flow engine) for that costs seconds while the check itself costs a fraction
of one. ``idle_run`` takes the output's lock and does the flow's housekeeping that needs no
model: finish what a killed run left (``reconcile``) and fold the ledger. It gives up (None)
as soon as anything needs the flow: a new file, a known file to move out, a lost part to
restore, a crowded partition to compact. The flow then runs as usual and decides again
under the lock. An idle run leaves no Prefect flow run and no monitoring row: it classified
nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tasks.classify.discover import backlog, scan_input, unseen
from tasks.classify.lease import DEFAULT_TTL
from tasks.classify.ledger import Ledger, OutputLock
from tasks.classify.outputs import crowded_partitions
from tasks.classify.run_summary import RunSummary
from tasks.classify.tally import RunTally, build_summary
from tasks.classify.verify import verify


@dataclass(frozen=True)
class IdleCheck:
    """``summary``: the idle run's summary (None: the flow has work to do). ``needs_model``:
    that work includes classifying (new files, or files of a lost part), so loading the
    model ahead of the flow pays; moving known files or compacting does not need it."""

    summary: RunSummary | None
    needs_model: bool = False


def idle_run(input_dir: str, output_dir: str, *, quiet_seconds: float,
             exclude: tuple[str, ...], move_processed: str | None, fold_at: int,
             compact_above: int, model_version: str,
             lease_seconds: float = DEFAULT_TTL) -> IdleCheck:
    """The run's summary when there is nothing to classify, move, restore or compact
    (``flow_run_id`` None); otherwise what the flow's work needs."""
    t0 = time.perf_counter()
    with OutputLock(output_dir, lease_seconds):
        ledger = Ledger.load(output_dir)
        rec = ledger.reconcile()
        if verify(ledger, deep=False).lost:
            return IdleCheck(None, needs_model=True)
        scan = scan_input(input_dir, quiet_seconds, exclude=exclude)
        fresh, known = unseen(scan.ready, ledger.entries)
        if fresh or (move_processed and known) or crowded_partitions(ledger.loc,
                                                                      compact_above):
            return IdleCheck(None, needs_model=bool(fresh))
        ledger.fold(min_records=fold_at)
    found = {"scan": scan, "fresh": [], "known": known, "todo": [], "backlog": backlog([])}
    return IdleCheck(build_summary(
        found, RunTally(), moved=0, rec=rec, lost={}, upkeep={"compacted_partitions": 0},
        run_id=None, input_dir=input_dir, output_dir=output_dir, model_version=model_version,
        seconds=time.perf_counter() - t0, work_seconds=0.0))
