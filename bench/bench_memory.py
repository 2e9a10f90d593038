"""Where a classify run's memory goes as the input grows: tracemalloc and the allocator's own
statistics, per stage, in one process.

    .venv/bin/python bench/bench_memory.py --files 12000 [--engine onnx] [--work DIR]
        [--no-tracemalloc]

Runs the classify flow in this process (Prefect's temporary server is a child process, as
with the CLI) on ``--files`` generated one-frame files (the ``bench_classify`` data if
``--work`` points at it) and, every ``--every`` files as chunks commit, records: this
process's RSS, the tree's RSS (with the server), Python's traced heap (``tracemalloc``),
glibc's ``mallinfo2`` (bytes in use by ``malloc``, and free bytes it keeps in its arenas)
and the number of live objects of the types the flow keeps per file. At the end it prints
the tracemalloc difference between the first checkpoint and the last, grouped by source
line: what grew with the number of files, and by how much per 1,000 files.

Stages: ``discover`` (before the first chunk: the input scan and the ledger), each chunk
commit (classify + commit), ``finish`` (after the flow: monitoring, summary, artifacts).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PAGE = os.sysconf("SC_PAGE_SIZE")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def mallinfo() -> dict[str, float]:
    """glibc's view (MB): in use by malloc (small + mmapped) and free in its arenas."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"malloc_used": (m.uordblks + m.hblkhd) / 2**20, "malloc_free": m.fordblks / 2**20,
            "mmapped": m.hblkhd / 2**20}


def own_rss() -> float:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


def checkpoint(stage: str, files: int, t0: float) -> dict:
    import pyarrow as pa
    from bench_classify import tree_rss

    traced = tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else 0
    row = {"stage": stage, "files": files, "seconds": time.perf_counter() - t0,
           "rss": own_rss(), "tree_rss": tree_rss(os.getpid()) / 2**20, "traced": traced,
           **mallinfo(), "arrow": pa.total_allocated_bytes() / 2**20}
    print("  " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in row.items()), file=sys.stderr, flush=True)
    return row


def prepare_in_child(work: Path, files: int) -> dict[str, Path]:
    """``bench_classify.prepare`` (data, registry, model.onnx) in a child process: making the
    model imports TensorFlow, which must not weigh on this process's numbers."""
    import json
    import subprocess

    code = ("import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/bench']; "
            "from bench_classify import prepare; "
            "p = prepare(__import__('pathlib').Path(sys.argv[2]), int(sys.argv[3]), "
            "min(int(sys.argv[3]), 2000)); print(json.dumps({k: str(v) for k, v in p.items()}))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), str(work), str(files)],
                         check=True, capture_output=True, text=True).stdout
    return {k: Path(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=12_000)
    ap.add_argument("--every", type=int, default=2_048)
    ap.add_argument("--engine", default="onnx")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--no-tracemalloc", action="store_true")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--trim", action="store_true",
                    help="malloc_trim(0) after every chunk (the experiment)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    paths = prepare_in_child(work, args.files)
    inp = paths["big"] if args.files > 2_000 else paths["small"]
    out = work / f"out-memory-{args.engine}"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    os.environ.update(POSEBATCH_DATA_ROOT=str(paths["data"]), DO_NOT_TRACK="1",
                      PREFECT_LOGGING_LEVEL="WARNING")
    from flows.classify import classify_flow
    from flows.runtime.progress import add_file_listener

    rows: list[dict] = []
    snaps: list[tuple[int, tracemalloc.Snapshot]] = []
    t0 = time.perf_counter()
    if not args.no_tracemalloc:
        tracemalloc.start(8)
    state = {"next": 1}

    def on_files(done: int, total: int) -> None:
        if args.trim:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        if done >= state["next"] * args.every or (done == total and total):
            state["next"] = done // args.every + 1
            gc.collect()
            rows.append(checkpoint("chunks", done, t0))
            if tracemalloc.is_tracing():
                snaps.append((done, tracemalloc.take_snapshot()))

    remove = add_file_listener(on_files)
    rows.append(checkpoint("start", 0, t0))
    summary = classify_flow(input_dir=str(inp), output_dir=str(out),
                            registry_dir=str(paths["registry"]), quiet_seconds=0,
                            engine=args.engine)
    remove()
    gc.collect()
    rows.append(checkpoint("finish", summary["classified"], t0))
    report(rows, snaps, summary, args)


def report(rows: list[dict], snaps: list, summary: dict, args: argparse.Namespace) -> None:
    print(f"\nclassified {summary['classified']:,} files on {summary['engine']}; "
          f"stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                      sorted(summary["stage_seconds"].items())))
    print("\n| stage | files | RSS MB | tree RSS MB | traced MB | malloc used MB | "
          "malloc free MB | Arrow pool MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['stage']} | {r['files']:,} | {r['rss']:.0f} | {r['tree_rss']:.0f} | "
              f"{r['traced']:.1f} | {r.get('malloc_used', 0):.0f} | "
              f"{r.get('malloc_free', 0):.0f} | {r['arrow']:.1f} |")
    if len(snaps) < 2:
        return
    (f0, first), (f1, last) = snaps[0], snaps[-1]
    per_k = 1000 / max(1, f1 - f0)
    print(f"\ngrowth from {f0:,} to {f1:,} files by source line (tracemalloc), "
          f"KB per 1,000 files:")
    for stat in last.compare_to(first, "lineno")[:args.top]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"- {where}: {stat.size_diff / 1024 * per_k:+.1f} KB/1k files "
              f"({stat.size / 2**20:.1f} MB now, {stat.count_diff:+d} blocks)")


if __name__ == "__main__":
    main()
