"""Benchmark: ``posebatch classify`` end to end against two plain scripts, same saved model.

    .venv/bin/python bench/bench_classify.py [--files 10000] [--small 2000] [--ref-files 300]
        [--repeat 2] [--work DIR]

Every measurement is a fresh process, timed from launch to exit; peak RSS and CPU time
(user + system, including the process's children such as the Prefect server posebatch
starts) come from ``wait4``. The methods run interleaved, ``--repeat`` rounds of each, so
that other work on a shared machine hits them alike; a row shows the best wall time (and
every run's), the lowest CPU time and the highest peak RSS.

- ``posebatch classify``: the CLI on N generated files into an empty output (Prefect API
  server started by the command itself; its database already exists, as on any run but
  the very first, which pays a one-time migration). Run on ``--small`` and ``--files``
  files, which gives the RSS growth.
- ``(a) per-file predict``: the reference approach, ``np.load`` then ``model.predict`` on
  one file at a time. It is slow, so it runs on ``--ref-files`` files and its time for N
  files is extrapolated (start-up once + per-file time x N); the row says so.
- ``(b) load all + predict(256)``: ``np.load`` every file into one array, then
  ``model.predict(x, batch_size=256)``.
- ``posebatch, nothing new``: the fixed cost of a run (start-up, discovery, ledger).

The model is the deployed design (``models.network.build_cnn(17)``) registered untrained:
throughput does not depend on the weights. Data from ``tasks/synth/generate.py``.
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

REF_A = """
import sys, time, numpy as np, keras
from pathlib import Path
files = sorted(Path(sys.argv[2]).rglob('*.npy'))[: int(sys.argv[3])]
model = keras.models.load_model(sys.argv[1], compile=False)
t, c = time.perf_counter(), time.process_time()
for f in files:
    model.predict(np.load(f), verbose=0)
print(time.perf_counter() - t, time.process_time() - c)
"""

REF_B = """
import sys, numpy as np, keras
from pathlib import Path
files = sorted(Path(sys.argv[2]).rglob('*.npy'))
model = keras.models.load_model(sys.argv[1], compile=False)
x = np.concatenate([np.load(f) for f in files])
p = model.predict(x, batch_size=256, verbose=0)
print(p.shape[0])
"""


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS (MB), CPU seconds (user + system, with the process's own
    children, e.g. the Prefect server posebatch starts) and stdout of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {out[-500:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, out


def prepare(work: Path, files: int, small: int) -> tuple[Path, Path, Path, Path]:
    from models.network import build_cnn
    from models.registry import Registry
    from models.spec import class_names
    from tasks.synth.generate import generate_dataset

    data = work / "data"
    big = data / "incoming"
    if not big.is_dir():
        per = 1000
        generate_dataset(data, per_class=0, seed=3, incoming_batches=-(-files // per),
                         incoming_per_batch=per)
    reg = data / "registry"
    if not Registry(reg).versions():
        entry = Registry(reg).register(build_cnn(17), {"class_names": class_names(),
                                                        "temperature": 1.0})
        Registry(reg).set_production(entry.version, "benchmark", "promote")
    some = work / "small"
    if not some.is_dir():
        for p in sorted(big.rglob("*.npy"))[:small]:
            dst = some / p.relative_to(big)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, dst)
            (dst.parent / "_SUCCESS").touch()
    tiny = work / "tiny"
    if not tiny.is_dir():
        for p in sorted(big.rglob("*.npy"))[:8]:
            dst = tiny / p.relative_to(big)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, dst)
            (dst.parent / "_SUCCESS").touch()
    return data, big, some, Registry(reg).resolve().model_path


class Row:
    """One method's measurements over the rounds: the best (lowest) wall time counts, as
    usual for timings on a shared machine; peak RSS is the highest seen."""

    def __init__(self, name: str, files: int, note: str = ""):
        self.name, self.files, self.note = name, files, note
        self.walls: list[float] = []
        self.rss: list[float] = []
        self.cpus: list[float] = []

    def add(self, wall: float, rss: float, cpu: float) -> None:
        self.walls.append(wall)
        self.rss.append(rss)
        self.cpus.append(cpu)
        print(f"  measured: {self.name} ({self.files} files): {wall:.1f} s, {rss:.0f} MB, "
              f"cpu {cpu:.1f} s; load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)

    @property
    def wall(self) -> float:
        return min(self.walls)

    def line(self) -> str:
        walls = "/".join(f"{w:.1f}" for w in self.walls)
        return (f"| {self.name} | {self.files} | {self.wall:.1f} | {self.files / self.wall:.0f} "
                f"| {min(self.cpus):.1f} | {max(self.rss):.0f} | {self.note}"
                f"{'; ' if self.note else ''}runs: {walls} s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--small", type=int, default=2_000)
    ap.add_argument("--ref-files", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2,
                    help="rounds; each round runs every method once, interleaved")
    ap.add_argument("--work", type=Path, default=None, help="keep data here (reused)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-classify-"))
    data, big, small, model_path = prepare(work, args.files, args.small)
    n_big = len(list(big.rglob("*.npy")))
    n_small = len(list(small.rglob("*.npy")))
    env = {**os.environ, "POSEBATCH_DATA_ROOT": str(data), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PREFECT_API_URL", None)
    load_before = os.getloadavg()

    def posebatch(inp: Path, tag: str, extra: dict[str, str] | None = None) -> tuple:
        out = work / f"out-{tag}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [PY, "-m", "flows.cli", "classify", "--input", str(inp), "--output", str(out),
               "--json"]
        wall, rss, cpu, stdout = timed(cmd, {**env, **(extra or {})})
        summary = json.loads(stdout.strip().splitlines()[-1])
        return wall, rss, cpu, summary, cmd

    posebatch(work / "tiny", "warmup")  # creates the Prefect database once
    ours = Row("posebatch classify", n_big)
    ours_small = Row("posebatch classify", n_small)
    idle = Row("posebatch, nothing new", n_small, "start-up + discovery + ledger")
    ref_b = Row("(b) load all + predict(256)", n_big, "all in memory")
    ref_a = Row("(a) per-file predict", n_big,
                f"extrapolated from {args.ref_files} files")
    prefect_own = Row("posebatch, nothing new, Prefect's own server start", n_small,
                      "for comparison")
    for rnd in range(args.repeat):
        w, r, c, s, _ = posebatch(big, "big")
        assert s["classified"] == n_big, s
        ours.add(w, r, c)
        wb, rb, cb, _ = timed([PY, "-c", REF_B, str(model_path), str(big)], env)
        ref_b.add(wb, rb, cb)
        w2, r2, c2, s2, cmd = posebatch(small, "small")
        assert s2["classified"] == n_small, s2
        ours_small.add(w2, r2, c2)
        wa, ra, ca, out = timed([PY, "-c", REF_A, str(model_path), str(big),
                                 str(args.ref_files)], env)
        loop, loop_cpu = (float(x) for x in out.strip().splitlines()[-1].split())
        scale = n_big / args.ref_files
        ref_a.add(wa - loop + loop * scale, ra, ca - loop_cpu + loop_cpu * scale)
        # Nothing new: the same command again = the fixed cost of a run.
        idle.add(*timed(cmd, env)[:3])
        if rnd == 0:
            prefect_own.add(*timed(cmd, {**env, "POSEBATCH_EARLY_SERVER": "0",
                                         "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS":
                                         "180"})[:3])

    print("\n| method | files | wall s (best) | files/s | CPU s | peak RSS MB | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in (ours, ours_small, idle, prefect_own, ref_b, ref_a):
        print(row.line())
    vs_b, vs_a = ref_b.wall / ours.wall, ref_a.wall / ours.wall
    growth = max(ours.rss) - max(ours_small.rss)
    print(f"\nposebatch vs (b): {vs_b:.2f}x (target >= 0.8: {'met' if vs_b >= 0.8 else 'MISSED'})"
          f"; vs (a): {vs_a:.1f}x (target >= 30: {'met' if vs_a >= 30 else 'MISSED'}); "
          f"peak RSS growth {n_small} -> {n_big} files: {growth:+.0f} MB (target < 150: "
          f"{'met' if growth < 150 else 'MISSED'})")
    print(f"(machine: {os.cpu_count()} cores; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; {args.repeat} interleaved rounds; data in {work})")


if __name__ == "__main__":
    main()
