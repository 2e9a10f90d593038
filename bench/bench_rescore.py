"""Benchmark: re-scoring a classified history against classifying it, same files, same model.

    .venv/bin/python bench/bench_rescore.py [--files 50000] [--repeat 2] [--work DIR]

Each round, as fresh processes timed from launch to exit (peak RSS and CPU from ``wait4``):

- ``posebatch classify`` of N generated files into an empty output (production v0001);
- ``posebatch rescore --model v0002`` of the same N files (every frame once more, new rows
  next to the old ones), after the classification.

The two models are the deployed design registered untrained (throughput does not depend on
the weights). The target (issue 14): re-scoring runs at least 0.8x the speed of classifying,
end to end and in the work phase (the flows' own ``work_seconds``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_classify import PY, prepare, timed  # noqa: E402 - the classify bench's helpers


def second_version(registry: Path) -> str:
    from models.network import build_cnn
    from models.registry import Registry
    from models.spec import class_names

    reg = Registry(registry)
    others = [v for v in reg.versions() if v != reg.production_version()]
    if others:
        return others[0]
    return reg.register(build_cnn(17), {"class_names": class_names(),
                                        "temperature": 1.0}).version


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-rescore-"))
    where_ = prepare(work, args.files, 8)
    data, big = where_["data"], where_["big"]
    new = second_version(where_["registry"])
    import os

    env = {**os.environ, "POSEBATCH_DATA_ROOT": str(data), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PREFECT_API_URL", None)
    rows = []
    for rnd in range(args.repeat):
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        where = ["--input", str(big), "--output", str(out), "--json"]
        c = timed([PY, "-m", "flows.cli", "classify", *where], env)
        r = timed([PY, "-m", "flows.cli", "rescore", "--model", new, *where], env)
        cs, rs = (json.loads(x["out"].strip().splitlines()[-1]) for x in (c, r))
        assert rs["frames"] == cs["frames"], (cs["frames"], rs["frames"])
        rows.append((c, cs, r, rs))
        print(f"round {rnd + 1}: classify {c['wall']:.1f} s ({cs['work_seconds']:.1f} s "
              f"work), rescore {r['wall']:.1f} s ({rs['work_seconds']:.1f} s work)",
              flush=True)
    c, cs, r, rs = min(rows, key=lambda x: x[0]["wall"] + x[2]["wall"])
    n = cs["frames"]
    print(f"\n{n} frames, best round of {args.repeat}\n")
    print("| run | wall s | frames/s | work s | work frames/s | CPU s | peak RSS MB (tree) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, t, s in (("classify", c, cs), ("rescore", r, rs)):
        print(f"| {name} | {t['wall']:.1f} | {n / t['wall']:.0f} | {s['work_seconds']:.1f} | "
              f"{n / s['work_seconds']:.0f} | {t['cpu']:.1f} | {t['rss']:.0f} |")
    print(f"\nrescore / classify speed: end to end {c['wall'] / r['wall']:.2f}x, work phase "
          f"{cs['work_seconds'] / rs['work_seconds']:.2f}x (target >= 0.8x)")


if __name__ == "__main__":
    main()
