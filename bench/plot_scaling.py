"""The scaling model of "Running on several machines" (README): its table and its plot.

    PYTHONPATH=. .venv/bin/python bench/bench_flow_commit.py --s3 --chunks 16 \\
        --groups 1,4,16 > commit.json
    PYTHONPATH=. .venv/bin/python bench/plot_scaling.py commit.json \\
        [--measured 1:700,2:882] [--out docs/scaling.png]

With ``w`` a worker's seconds per file, the flow process commits on its own path ``f``
seconds per file. One record a chunk on ``s3://``: ``f = c + L / F``, the flow waits for
the record's PUT (``L``) once a chunk of ``F`` files. With group commit, every chunk ready
while the flow commits goes into the next record: committing ``G`` chunks takes
``L + G F c``, ``N`` workers finish ``N / (w F)`` chunks a second, so the group settles at
``G = N L / (w F - N F c)`` and stays finite while ``N < w / c``: the PUT adds latency, no
ceiling. The parts are moved into place by ``T`` background threads, ``R`` requests of
``L`` a chunk: a ceiling of ``T F / (R L)`` files a second. Throughput::

    X(N) = min(N / w, 1 / f, T F / (R L))       N* = the N where N / w meets the rest

A real flow also pays, once a record, the Prefect task run around the commit
(``--task-seconds``, about 40 ms at load 10 here): a second ``L`` as far as the model goes.

Inputs: ``c`` and ``L`` from bench_flow_commit's JSON (the commit path of the largest
group, and of one chunk a record, per file; ``s3_conditional_put_s``), ``w`` from the Dask
benchmark's threaded row (0.73 ms), ``--measured``: files/s of real Dask runs (workers:rate)
drawn as points. Prints the README's table (markdown) and writes the plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

W = 0.73e-3      # s a file, a 2-core worker (README: Dask benchmark, threaded work phase)
F = 2048         # files a chunk (--chunk-files)
T = 8            # background finalize threads (Ledger.finalize_in_background)
R = 4            # requests a chunk to move: 2 part copies, 1 list, 1 delete
NS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def rate(n: float, f: float, movers: float = float("inf")) -> float:
    return min(n / W, 1 / f, movers)


def saturation(f: float, movers: float = float("inf")) -> float:
    return W * min(1 / f, movers)


def models(bench: dict, task: float) -> dict[str, tuple[float, float]]:
    """Each line of the table: (f, movers ceiling in files/s). ``task``: the seconds of the
    Prefect task run around a commit in a real flow (not in bench_flow_commit), paid once a
    record: added per chunk to one record a chunk, amortised like the PUT by a group."""
    groups = sorted(int(k.split("_group")[1].split("_")[0]) for k in bench
                    if k.startswith("s3_after_group") and k.endswith("_commit_path_s_per_file"))
    put = bench["s3_conditional_put_s"]
    movers = T * F / (R * put)
    return {
        "local, the flow writes every row": (bench["local_before_s_per_file"], float("inf")),
        "s3, one record a chunk": (bench[f"s3_after_group{groups[0]}_commit_path_s_per_file"],
                                   movers),
        f"s3, one record a chunk, + task run ({task * 1e3:.0f} ms)": (
            bench[f"s3_after_group{groups[0]}_commit_path_s_per_file"] + task / F, movers),
        "s3, group commit": (bench[f"s3_after_group{groups[-1]}_commit_path_s_per_file"],
                             movers),
        "local, group commit": (bench[f"local_after_group{groups[-1]}_s_per_file"],
                                float("inf")),
    }


def moved_rate(bench: dict) -> float:
    """Files a second whose parts this S3 endpoint moved into place in the largest group's
    run (all committed, then every part in place): a lower bound of the movers' ceiling
    measured, where ``T F / (R L)`` is the model's."""
    g = max(int(k.split("_group")[1].split("_")[0]) for k in bench
            if k.startswith("s3_after_group") and k.endswith("_commit_path_s_per_file"))
    return 1 / bench[f"s3_after_group{g}_s_per_file"]


def table(lines: dict[str, tuple[float, float]]) -> str:
    names = list(lines)
    head = "| workers N | " + " | ".join(f"{n} (f = {lines[n][0] * 1e6:.1f} us)"
                                          for n in names) + " |"
    rows = [head, "|---:|" + "---:|" * len(names)]
    for n in NS:
        rows.append(f"| {n} | " + " | ".join(f"{rate(n, *lines[k]):,.0f}" for k in names)
                    + " |")
    rows.append("| saturation N* | " + " | ".join(f"{saturation(*lines[k]):.0f}"
                                                  for k in names) + " |")
    return "\n".join(rows)


def plot(lines: dict[str, tuple[float, float]], measured: dict[int, float], moved: float,
         out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(NS, [n / W for n in NS], ":", color="grey", label="N / w (workers alone)")
    for name, (f, movers) in lines.items():
        ax.plot(NS, [rate(n, f, movers) for n in NS], marker="o", ms=3,
                label=f"{name}: N* = {saturation(f, movers):.0f}")
    if measured:
        ax.plot(list(measured), list(measured.values()), "k*", ms=10,
                label="measured, Dask on this 2-core machine")
    ax.axhline(moved, color="grey", lw=0.8, ls="--",
               label=f"parts moved by moto here: {moved:,.0f} files/s (lower bound)")
    ax.axvline(64, color="grey", lw=0.5)
    ax.set(xscale="log", yscale="log", xlabel="Dask workers N (2 cores each)",
           ylabel="files per second", title="Projected throughput: min(N/w, 1/f, movers)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path, help="bench_flow_commit.py --s3's JSON")
    ap.add_argument("--measured", default="", help="workers:files/s,... of real Dask runs")
    ap.add_argument("--out", type=Path, default=Path("docs/scaling.png"))
    ap.add_argument("--task-seconds", type=float, default=0.04,
                    help="the commit's Prefect task run, once a record (measured: README)")
    args = ap.parse_args()
    bench = json.loads(args.bench.read_text())
    lines = models(bench, args.task_seconds)
    measured = {int(a): float(b) for a, b in
                (x.split(":") for x in args.measured.split(",") if x)}
    print(table(lines))
    moved = moved_rate(bench)
    print(f"\nmovers: model {T * F / (R * bench['s3_conditional_put_s']):,.0f} files/s "
          f"(T {T}, R {R}, L {bench['s3_conditional_put_s'] * 1e3:.1f} ms); moved by this "
          f"endpoint in the largest group's run: at least {moved:,.0f} files/s "
          f"(N = {moved * W:.0f} workers' worth)")
    plot(lines, measured, moved, args.out)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
