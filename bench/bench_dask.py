"""Benchmark: classification throughput on 1, 2 and 4 local Dask workers against threads.

    .venv/bin/python bench/bench_dask.py [--files 4000] [--workers 1,2,4] [--chunk-files N]

Every row is a fresh ``posebatch classify`` process on the same generated input into an empty
output, timed from launch to exit ("end to end": Prefect API start, cluster start, model load
and compile in each worker, the work, the commits) and by the flow's own work clock
("work only": from the first chunk submitted to the last one committed; the cluster start
and the model load happen before that window on Dask, and overlap Prefect's start-up on
threads). Rows run round robin ``--repeat`` times and the best of each is kept, so drift in
the machine's load between rows hits every row alike; the spread is printed.

All rows use the same chunking (``--chunk-files``, default files/16), so every worker gets
several chunks and the commit path is identical. The model is the deployed design
(``models.network.build_cnn(17)``) registered untrained; throughput does not depend on the
weights. XLA as the CLI defaults it (``POSEBATCH_XLA``). Input from ``tasks/synth/generate.py``
(one frame per file).

Why Dask is not expected to win on a small machine: a worker is a separate process that
imports TensorFlow, loads and compiles the model (once per worker, seconds each), and its
results are pickled back to the flow process, which still commits every chunk itself. On a
machine with C cores the threaded path already keeps the cores busy (TensorFlow's intra-op
pool plus read-ahead threads), so N workers only split the same cores N ways (each worker's
TF pool is sized to cores/N) and add the start-up. Dask pays off when the workers bring cores
(or machines) of their own and the input is large enough to amortise the start-up: see the
break-even estimate printed under the table. Under it, the flow process's commit stage
per file in each row (``stage_seconds.commit``): the ``f`` of the README's scaling model,
measured in real runs (``bench/plot_scaling.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def prepare(work: Path, files: int) -> tuple[Path, Path]:
    """A data root with ``files`` generated input files (reused when present) and a model."""
    from models.network import build_cnn
    from models.registry import Registry
    from models.spec import class_names
    from tasks.synth.generate import generate_dataset

    data = work / "data"
    inp = data / "incoming"
    have = len(list(inp.rglob("*.npy"))) if inp.is_dir() else 0
    if have != files:
        shutil.rmtree(inp, ignore_errors=True)
        per = min(500, files)
        batches = -(-files // per)
        generate_dataset(data, per_class=0, seed=5, incoming_batches=batches,
                         incoming_per_batch=per)
        extra = sorted(inp.rglob("*.npy"))[files:]      # exactly ``files``
        for p in extra:
            p.unlink()
    reg = data / "registry"
    if not Registry(reg).versions():
        entry = Registry(reg).register(build_cnn(17), {"class_names": class_names(),
                                                        "temperature": 1.0})
        Registry(reg).set_production(entry.version, "benchmark", "promote")
    tiny = work / "tiny"
    if not tiny.is_dir():
        for p in sorted(inp.rglob("*.npy"))[:4]:
            dst = tiny / p.relative_to(inp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, dst)
            (dst.parent / "_SUCCESS").touch()
    return data, tiny


def classify(data: Path, inp: Path, out: Path, chunk: int, workers: int | None,
             env: dict[str, str]) -> tuple[float, dict]:
    """One fresh CLI process: wall seconds from launch to exit, and its JSON summary."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [PY, "-m", "flows.cli", "classify", "--data", str(data), "--input", str(inp),
           "--output", str(out), "--chunk-files", str(chunk), "--quiet-seconds", "0", "--json"]
    if workers:
        cmd += ["--workers", str(workers)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT,
                         stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed ({res.returncode}): "
                           f"{res.stderr[-1500:]}")
    return wall, json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=4000, help="input files (one frame each)")
    ap.add_argument("--workers", default="1,2,4", help="Dask worker counts to measure")
    ap.add_argument("--chunk-files", type=int, default=None,
                    help="files per task, the same for every row [default: files/16]")
    ap.add_argument("--repeat", type=int, default=2, help="rounds over all rows (best kept)")
    ap.add_argument("--work", type=Path, default=None, help="keep data here (reused)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-dask-"))
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    chunk = args.chunk_files or max(1, -(-args.files // 16))
    print(f"generating {args.files} files in {work} ...", file=sys.stderr, flush=True)
    data, tiny = prepare(work, args.files)
    inp = data / "incoming"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", POSEBATCH_DATA_ROOT=str(data))
    classify(data, tiny, work / "out-warmup", chunk, None, env)  # Prefect database, once

    plan: list[tuple[str, int | None]] = [("threads (default)", None)]
    plan += [(f"Dask, {n} worker{'s' if n > 1 else ''}", n) for n in counts]
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in plan}
    commits: dict[str, list[float]] = {label: [] for label, _ in plan}   # flow s a file
    for rnd in range(args.repeat):            # round robin: load drift hits every row alike
        for label, k in plan:
            wall, s = classify(data, inp, work / f"out-{k or 'threads'}", chunk, k, env)
            if s["classified"] != args.files:
                raise RuntimeError(f"{label}: classified {s['classified']} of {args.files}")
            runs[label].append((wall, s["work_seconds"]))
            commits[label].append(s.get("stage_seconds", {}).get("commit", 0.0) / args.files)
            print(f"  round {rnd + 1}: {label}: {wall:.1f} s end to end, "
                  f"{s['work_seconds']:.1f} s work", file=sys.stderr, flush=True)
    # the best of the repeats: what the machine can do when the other jobs leave it alone
    rows = [(label, k, min(w for w, _ in runs[label]), min(x for _, x in runs[label]))
            for label, k in plan]

    n = args.files
    base_wall, base_work = rows[0][2], rows[0][3]
    print(f"\n{n} files ({n * 17 * 64 * 48 * 4 / 2**20:.0f} MB), {chunk} files per task, "
          f"{os.cpu_count()} cores, best of {args.repeat} round(s)\n")
    head = (f"| {'task runner':<18} | {'end to end s':>12} | {'files/s':>8} | {'work s':>7} | "
            f"{'files/s (work)':>14} | {'start-up s':>10} | {'vs threads (work)':>17} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for label, _, wall, wsec in rows:
        print(f"| {label:<18} | {wall:>12.1f} | {n / wall:>8.0f} | {wsec:>7.1f} | "
              f"{n / wsec:>14.0f} | {wall - wsec:>10.1f} | {base_work / wsec:>16.2f}x |")
    print()
    for label, _, wall, wsec in rows[1:]:
        extra_fixed = (wall - wsec) - (base_wall - base_work)
        per_file_gain = base_work / n - wsec / n
        if per_file_gain > 0:
            print(f"{label}: fixed cost {extra_fixed:+.1f} s against threads, "
                  f"{per_file_gain * 1e3:.2f} ms less per file: breaks even at about "
                  f"{max(0, extra_fixed) / per_file_gain:.0f} files")
        else:
            print(f"{label}: slower per file than threads here "
                  f"({wsec / n * 1e3:.2f} vs {base_work / n * 1e3:.2f} ms), fixed cost "
                  f"{extra_fixed:+.1f} s against threads: does not pay off on this machine")
    print("\nthe flow process's commit stage per file (f of the README's scaling model; "
          "best, range):")
    for label, _ in plan:
        got = commits[label]
        print(f"  {label}: {min(got) * 1e6:.0f} us ({min(got) * 1e6:.0f}-{max(got) * 1e6:.0f})")
    spread = max(max(w for w, _ in r) / min(w for w, _ in r) for r in runs.values())
    print(f"\nlargest spread between repeats of one row: {spread:.2f}x (end to end)")
    print(f"\n(load average {os.getloadavg()[0]:.2f} at the end; data in {work})")


if __name__ == "__main__":
    main()
