"""Query latency on 1,000,000 prediction rows (target: a filtered query under one second).

Builds a hive-partitioned predictions dataset in the real schema (7 days, several part files
per day) with ``tasks.synth.sample_outputs``, then times the read paths the CLI uses. Each timing is
the median of ``--repeat`` runs in this process (warm OS cache, as on the morning after).

    .venv/bin/python bench/bench_query.py [--rows 1000000] [--days 7] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

TARGET_SECONDS = 1.0


def timed(fn: Callable[[], int], repeat: int) -> tuple[int, float, float]:
    times, rows = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - t0)
    return rows, statistics.median(times), min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--rows-per-file", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="keep the dataset here")
    args = ap.parse_args()

    from tasks.io.schema import PREDICTIONS
    from tasks.read.query import read_predictions
    from tasks.read.sql import run_sql
    from tasks.read.summary import summarize
    from tasks.synth.sample_outputs import synth_predictions, write_partitioned

    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_query_")
        out = Path(tmp.name)
    else:
        out = args.dir
    start = date(2024, 5, 1)
    t0 = time.perf_counter()
    table = synth_predictions(args.rows, start, args.days, seed=1, batches=20)
    files = write_partitioned(table, out, PREDICTIONS, rows_per_file=args.rows_per_file)
    build = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in files)
    del table
    last2 = date.fromordinal(start.toordinal() + args.days - 2).isoformat()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
          "(shared with other jobs)")
    print(f"dataset: {args.rows:,} rows, {args.days} days, {len(files)} files, "
          f"{size / 1e6:.0f} MB, built in {build:.1f} s ({out})\n")

    cases: list[tuple[str, Callable[[], int]]] = [
        ("filtered: --since (last 2 days) --label x2 --min-confidence 0.9",
         lambda: read_predictions(out, since=last2, labels=["dummy", "action_up"],
                                  min_confidence=0.9).num_rows),
        ("filtered: --max-confidence 0.3 --batch (1 of 20)",
         lambda: read_predictions(out, max_confidence=0.3, batches=["batch_007"]).num_rows),
        ("filtered: --path 'batch_01[0-4]/s0*' --columns 3",
         lambda: read_predictions(out, path="batch_01[0-4]/s0*",
                                  columns=["source_path", "label", "confidence"]).num_rows),
        ("sorted: --max-confidence 0.2 --order-by confidence --limit 50 (all columns)",
         lambda: read_predictions(out, max_confidence=0.2, order_by="confidence",
                                  limit=50).num_rows),
        ("first rows: --limit 200 (the terminal table)",
         lambda: read_predictions(out, limit=200).num_rows),
        ("all rows, all columns (no filter)",
         lambda: read_predictions(out).num_rows),
        ("--summary over all rows (day x label)",
         lambda: summarize(read_predictions(out, columns=["date", "label",
                                                          "confidence"])).num_rows),
        ("sql: GROUP BY date, label over all rows",
         lambda: run_sql(out, "SELECT date, label, count(*), avg(confidence) "
                              "FROM predictions GROUP BY ALL").num_rows),
    ]
    rows_out = []
    for name, fn in cases:
        rows, med, best = timed(fn, args.repeat)
        rows_out.append((name, rows, med, best))

    cli = [sys.executable, "-m", "flows.cli", "query", "--output", str(out), "--since", last2,
           "--label", "dummy", "--label", "action_up", "--min-confidence", "0.9",
           "--format", "csv"]

    def run_cli() -> int:
        done = subprocess.run(cli, capture_output=True, text=True, check=True)
        return len(done.stdout.splitlines()) - 1

    rows, med, best = timed(run_cli, max(1, args.repeat // 2))
    rows_out.append(("CLI end to end (process start included), first case to CSV",
                     rows, med, best))

    width = max(len(r[0]) for r in rows_out)
    print(f"| {'query'.ljust(width)} | rows out | median s | best s |")
    print(f"|{'-' * (width + 2)}|---------:|---------:|-------:|")
    for name, rows, med, best in rows_out:
        print(f"| {name.ljust(width)} | {rows:>8,} | {med:>8.3f} | {best:>6.3f} |")
    worst_filtered = max(med for name, _, med, _ in rows_out if name.startswith("filtered"))
    verdict = "PASS" if worst_filtered < TARGET_SECONDS else "FAIL"
    print(f"\nslowest filtered query (median): {worst_filtered:.3f} s "
          f"(target < {TARGET_SECONDS} s): {verdict}; load average now "
          f"{os.getloadavg()[0]:.1f}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
