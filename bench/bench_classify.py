"""Benchmark: ``posebatch classify`` against honest baselines, all in one run, same saved model.

    .venv/bin/python bench/bench_classify.py [--files 10000] [--small 2000] [--ref-files 200]
        [--repeat 1] [--work DIR] [--baseline OTHER_CHECKOUT]

Every row but the in-process ceilings is a fresh process timed from launch to exit. Peak RSS
is summed over the whole process tree (the command and every descendant, e.g. the Prefect
API server posebatch starts), sampled from ``/proc`` every 50 ms: the row shows the largest
sum. CPU time (user + system, children included) comes from ``wait4``.

- ``(a) plain script``: ``bench/plain_classify.py``, a competent script for the same job
  (thread-pool ``np.load`` of the next 256 files while ``predict_on_batch`` runs on the
  current 256, softmax, one Parquet of label + confidence; TensorFlow import and model load
  included). ``(a2)``: ``bench/plain_classify_onnx.py``, the same script on ONNX Runtime
  (how much of posebatch's gain is the engine, how much the pipeline).
- ``(b) model only``: 256 preloaded frames per call, frames/s: Keras ``predict_on_batch``,
  posebatch's Keras engine, a default ONNX Runtime session and posebatch's ONNX engine (the
  ONNX model-only ceiling is the faster of the last two).
- ``(c) read + hash``: read every file and SHA-256 it on two threads, nothing else.
- ``(d) posebatch classify``: the CLI on ``--small`` and ``--files`` files into an empty
  output, on the ONNX engine (the default for a version with a verified ``model.onnx``,
  made by ``export_version`` when the benchmark registers its model) and ``--engine keras``
  (Prefect API server started by the command itself; its database already exists), with the
  run summary's work phase (``work_seconds``) and the chunks' per-stage seconds
  (a separate in-process run of ``tasks.classify.infer.classify_files`` on the same files,
  per engine).
- ``(e) per-frame predict``: the reference project's way, ``model.predict`` on one file at
  a time, on ``--ref-files`` files, extrapolated to N (start-up once + per-file time x N).
- ``--baseline DIR``: another checkout of posebatch (e.g. ``main``), its ``(d)`` on ``--files``
  files and its nothing-new run in the same rounds, interleaved: before/after on one load.
- ``nothing new``: the same command again on the ``--files`` output (everything processed),
  with the command's own temporary server and against a server the benchmark started once
  (``PREFECT_API_URL``); the row says whether the run imported TensorFlow.

The model is the deployed design (``models.network.build_cnn(17)``) registered untrained:
throughput does not depend on the weights. Data from ``tasks/synth/generate.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PAGE = os.sysconf("SC_PAGE_SIZE")

MODEL_ONLY = """
import sys, time, json, numpy as np
from pathlib import Path
model_dir, inp, frames = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
files = sorted(inp.rglob('*.npy'))[:256]
x = np.concatenate([np.load(f) for f in files]).astype(np.float32)
import keras
model = keras.models.load_model(model_dir / 'model.keras', compile=False)
model.predict_on_batch(x)
calls = max(1, frames // len(x))
t = time.perf_counter()
for _ in range(calls):
    model.predict_on_batch(x)
keras_fps = calls * len(x) / (time.perf_counter() - t)
out = {"keras": keras_fps}
from tasks.classify.engine import aligned_zeros
from tasks.classify.infer import load_predictor
buf = aligned_zeros(x.shape); buf[:] = x
for engine in ("keras", "onnx"):
    pred = load_predictor(sys.argv[4], sys.argv[5], len(x), engine=engine)
    pred(buf)
    t = time.perf_counter()
    for _ in range(calls):
        pred(buf)
    out["posebatch_" + engine] = calls * len(x) / (time.perf_counter() - t)
import onnxruntime as ort
session = ort.InferenceSession(str(model_dir / 'model.onnx'), providers=['CPUExecutionProvider'])
session.run(None, {'heatmaps': x})
t = time.perf_counter()
for _ in range(calls):
    session.run(None, {'heatmaps': x})
out["onnxruntime"] = calls * len(x) / (time.perf_counter() - t)
print(json.dumps(out))
"""

READ_HASH = """
import sys, time, json, hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
files = sorted(Path(sys.argv[1]).rglob('*.npy'))
def one(p):
    with open(p, 'rb') as fh:
        return hashlib.sha256(fh.read()).hexdigest()
t = time.perf_counter()
with ThreadPoolExecutor(2) as pool:
    n = sum(1 for _ in pool.map(one, files, chunksize=64))
print(json.dumps({"files": n, "seconds": time.perf_counter() - t}))
"""

STAGES = """
import sys, time, json
from pathlib import Path
from collections import Counter
from tasks.classify.infer import classify_files, load_predictor
inp, reg, version, engine = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
files = sorted(Path(inp).rglob('*.npy'))
rels = [(p.relative_to(inp).as_posix(), p.stat().st_size) for p in files]
load_predictor(reg, version, 256, engine=engine)
total = Counter()
frames = 0
t = time.perf_counter()
for i in range(0, len(rels), 2048):
    res = classify_files(inp, rels[i:i + 2048], reg, version, 256, engine=engine)
    total.update(res.seconds)
    frames += len(res.frame_index)
print(json.dumps({"frames": frames, "seconds": time.perf_counter() - t, "stages": total}))
"""

PER_FRAME = """
import sys, time, numpy as np, keras
from pathlib import Path
files = sorted(Path(sys.argv[2]).rglob('*.npy'))[: int(sys.argv[3])]
model = keras.models.load_model(sys.argv[1], compile=False)
t, c = time.perf_counter(), time.process_time()
for f in files:
    model.predict(np.load(f), verbose=0)
print(time.perf_counter() - t, time.process_time() - c)
"""


# -- peak RSS of a process tree ----------------------------------------------------------------
def _parents() -> dict[int, int]:
    """pid -> parent pid for every process (from /proc/<pid>/stat)."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        out[int(name)] = int(stat.rsplit(b")", 1)[1].split()[1])
    return out


def tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and all its descendants, summed."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class TreeSampler(threading.Thread):
    """Samples ``tree_rss(pid)`` every ``interval`` seconds; ``peak`` is the largest sum."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self.done.wait(self.interval)


def timed(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> dict:
    """One fresh process: wall seconds, summed peak RSS of its tree (MB), CPU seconds
    (user + system with its children), stdout and stderr."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, cwd=cwd)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        sampler.done.set()  # the tree is gone once stdout closes... or nearly: one last look
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {out[-300:]} {stderr[-800:]}")
    return {"wall": wall, "rss": sampler.peak / 2**20, "cpu": usage.ru_utime + usage.ru_stime,
            "out": out, "err": stderr}


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


# -- data ----------------------------------------------------------------------------------
def _link_subset(src: Path, dst: Path, n: int) -> None:
    if dst.is_dir():
        return
    for p in sorted(src.rglob("*.npy"))[:n]:
        out = dst / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.link(p, out)
        (out.parent / "_SUCCESS").touch()


def prepare(work: Path, files: int, small: int) -> dict[str, Path]:
    from models.network import build_cnn
    from models.registry import Registry
    from models.spec import class_names
    from tasks.synth.generate import generate_dataset

    data = work / "data"
    pool = data / "incoming"
    if not pool.is_dir() or len(list(pool.rglob("*.npy"))) < files:
        shutil.rmtree(pool, ignore_errors=True)
        per = 1000
        generate_dataset(data, per_class=0, seed=3, incoming_batches=-(-files // per),
                         incoming_per_batch=per)
    reg = data / "registry"
    if not Registry(reg).versions():
        entry = Registry(reg).register(build_cnn(17), {"class_names": class_names(),
                                                        "temperature": 1.0})
        Registry(reg).set_production(entry.version, "benchmark", "promote")
    from tasks.train.inference_artifact import export_version

    export_version(Registry(reg), Registry(reg).resolve().version)  # kept when verified
    big, some, tiny = work / f"in-{files}", work / f"in-{small}", work / "in-8"
    _link_subset(pool, big, files)
    _link_subset(pool, some, small)
    _link_subset(pool, tiny, 8)
    entry = Registry(reg).resolve()
    return {"data": data, "big": big, "small": some, "tiny": tiny, "registry": reg,
            "model_dir": entry.model_path.parent, "version": Path(entry.version)}


# -- the benchmark -------------------------------------------------------------------------
CHUNK_LINE = re.compile(r"chunk \d+/\d+: (\d+) files, (\d+) frames in ([\d.]+) s "
                        r"\(model ([\d.]+) s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--small", type=int, default=2_000)
    ap.add_argument("--ref-files", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds; each round runs every method once, interleaved")
    ap.add_argument("--work", type=Path, default=None, help="keep data here (reused)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another posebatch checkout to run (d) and nothing-new from, "
                         "interleaved (before/after in one run)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-classify-"))
    paths = prepare(work, args.files, args.small)
    data, big, small = paths["data"], paths["big"], paths["small"]
    n_big = len(list(big.rglob("*.npy")))
    n_small = len(list(small.rglob("*.npy")))
    version = str(paths["version"])
    env = {**os.environ, "POSEBATCH_DATA_ROOT": str(data), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    load_before = os.getloadavg()
    rows: dict[str, list[dict]] = {}

    def add(name: str, m: dict) -> dict:
        rows.setdefault(name, []).append(m)
        print(f"  {name}: {m['wall']:.1f} s, {m['rss']:.0f} MB, cpu {m['cpu']:.1f} s; load "
              f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        return m

    def posebatch(inp: Path, tag: str, fresh: bool = True, extra: dict | None = None,
                  engine: str = "auto", root: Path = ROOT) -> dict:
        out = work / f"out-{tag}"
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        cmd = [PY, "-m", "flows.cli", "classify", "--input", str(inp), "--output", str(out),
               "--engine", engine, "--json"]
        m = timed(cmd, {**env, **(extra or {}), "PYTHONPATH": str(root)}, cwd=root)
        m["summary"] = last_json(m["out"])
        m["chunks"] = [tuple(float(x) for x in g) for g in CHUNK_LINE.findall(m["err"])]
        return m

    posebatch(paths["tiny"], "warmup")  # creates the Prefect database once
    from flows.runtime.ephemeral import EarlyServer

    # The running server has its own home: the commands' temporary servers use data/prefect.
    home = (data / "prefect-running").resolve()
    home.mkdir(parents=True, exist_ok=True)
    server = EarlyServer(home / "server.log")
    os.environ.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1",
                      PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server_env = {**env, "PREFECT_HOME": str(home)}
    for rnd in range(args.repeat):
        m = add("(d) posebatch classify", posebatch(big, "big"))
        assert m["summary"]["classified"] == n_big, m["summary"]
        assert m["summary"]["engine"] == "onnx", m["summary"]
        add("(a) plain script", timed([PY, str(ROOT / "bench" / "plain_classify.py"),
                                       str(paths["model_dir"]), str(big),
                                       str(work / "plain.parquet")], env))
        m = add("(d) posebatch classify, keras", posebatch(big, "big-keras", engine="keras"))
        assert m["summary"]["classified"] == n_big, m["summary"]
        add("(a2) plain script, ONNX Runtime",
            timed([PY, str(ROOT / "bench" / "plain_classify_onnx.py"), str(paths["model_dir"]),
                   str(big), str(work / "plain-onnx.parquet")], env))
        m = add("(d) posebatch classify, small", posebatch(small, "small"))
        assert m["summary"]["classified"] == n_small, m["summary"]
        m = add("(d) posebatch classify, keras, small", posebatch(small, "small-keras",
                                                                  engine="keras"))
        assert m["summary"]["classified"] == n_small, m["summary"]
        m = add("nothing new, own server", posebatch(big, "big", fresh=False))
        assert m["summary"]["classified"] == 0 and m["summary"]["new"] == 0, m["summary"]
        if args.baseline:
            m = add("(d) posebatch classify, baseline", posebatch(big, "big-base",
                                                                  root=args.baseline))
            assert m["summary"]["classified"] == n_big, m["summary"]
            m = add("nothing new, own server, baseline", posebatch(big, "big-base", fresh=False,
                                                                   root=args.baseline))
            assert m["summary"]["classified"] == 0, m["summary"]
        m = timed([PY, "-c", PER_FRAME, str(paths["model_dir"] / "model.keras"), str(big),
                   str(args.ref_files)], env)
        loop, loop_cpu = (float(x) for x in m["out"].strip().splitlines()[-1].split())
        scale = n_big / args.ref_files
        m.update(wall=m["wall"] - loop + loop * scale, cpu=m["cpu"] - loop_cpu + loop_cpu * scale)
        add("(e) per-frame predict", m)
        if rnd == 0:  # the in-process ceilings and stages: once
            m = add("(b) model only", timed([PY, "-c", MODEL_ONLY, str(paths["model_dir"]),
                                             str(big), str(min(n_big, 4096)),
                                             str(paths["registry"]), version], env))
            m["fps"] = last_json(m["out"])
            m = add("(c) read + hash", timed([PY, "-c", READ_HASH, str(big)], env))
            m["res"] = last_json(m["out"])
            for engine in ("onnx", "keras"):
                m = add(f"work phase in-process, {engine}",
                        timed([PY, "-c", STAGES, str(big), str(paths["registry"]), version,
                               engine], env))
                m["res"] = last_json(m["out"])
            server.launch()  # a running server, started once, like a deployed one
            server.wait()
            running = {**server_env, "PREFECT_API_URL": server.api_url}
            posebatch(paths["tiny"], "warmup", extra=running)
        m = add("nothing new, running server", posebatch(big, "big", fresh=False,
                                                         extra=running))
        assert m["summary"]["classified"] == 0, m["summary"]
        m = add("(d) posebatch classify, running server", posebatch(big, "big-running",
                                                                    extra=running))
        assert m["summary"]["classified"] == n_big, m["summary"]
    server.stop()
    report(rows, n_big, n_small, args, load_before, work)


def report(rows: dict[str, list[dict]], n_big: int, n_small: int, args: argparse.Namespace,
           load_before: tuple[float, ...], work: Path) -> None:
    def best(name: str) -> dict:
        return min(rows[name], key=lambda m: m["wall"])

    def line(name: str, files: int, note: str = "") -> str:
        ms = rows[name]
        b = best(name)
        walls = "/".join(f"{m['wall']:.1f}" for m in ms)
        return (f"| {name} | {files:,} | {b['wall']:.1f} | {files / b['wall']:.0f} | "
                f"{min(m['cpu'] for m in ms):.1f} | {max(m['rss'] for m in ms):.0f} | "
                f"{note}{'; ' if note else ''}runs: {walls} s |")

    def flow_note(m: dict) -> str:
        s = m["summary"]
        chunks = m["chunks"]
        return (f"flow {s['seconds']:.1f} s, work phase {s['work_seconds']:.1f} s "
                f"({s['frames'] / s['work_seconds']:.0f} frames/s; chunks "
                f"{sum(c[2] for c in chunks):.1f} s, model {sum(c[3] for c in chunks):.1f} s)")

    def plain_note(m: dict, script: str) -> str:
        p = last_json(m["out"])
        return (f"bench/{script}; its loop {p['work_seconds']:.1f} s "
                f"({n_big / p['work_seconds']:.0f} frames/s)")

    d, dk = best("(d) posebatch classify"), best("(d) posebatch classify, keras")
    ds, dks = best("(d) posebatch classify, small"), best("(d) posebatch classify, keras, small")
    a, a2 = best("(a) plain script"), best("(a2) plain script, ONNX Runtime")
    dr = best("(d) posebatch classify, running server")
    idle, idle_run = best("nothing new, own server"), best("nothing new, running server")
    e = best("(e) per-frame predict")
    fps = rows["(b) model only"][0]["fps"]
    rh = rows["(c) read + hash"][0]["res"]
    print("\n| method | files | wall s (best) | files/s | CPU s | peak RSS MB (tree) | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print(line("(d) posebatch classify", n_big, "ONNX engine (auto); " + flow_note(d)))
    print(line("(d) posebatch classify, keras", n_big, "--engine keras; " + flow_note(dk)))
    print(line("(d) posebatch classify, small", n_small))
    print(line("(d) posebatch classify, keras, small", n_small))
    print(line("(d) posebatch classify, running server", n_big, flow_note(dr)))
    print(line("(a) plain script", n_big, plain_note(a, "plain_classify.py")))
    print(line("(a2) plain script, ONNX Runtime", n_big,
               plain_note(a2, "plain_classify_onnx.py")))
    print(line("(e) per-frame predict", n_big, f"extrapolated from {args.ref_files} files"))
    for name, m in (("nothing new, own server", idle), ("nothing new, running server", idle_run)):
        print(line(name, n_big, f"TensorFlow imported: {m['summary'].get('tensorflow_imported')}"))
    if args.baseline:
        print(line("(d) posebatch classify, baseline", n_big,
                   f"{args.baseline}; " + flow_note(best("(d) posebatch classify, baseline"))))
        print(line("nothing new, own server, baseline", n_big, str(args.baseline)))
    onnx_ceiling = max(fps["onnxruntime"], fps["posebatch_onnx"])
    print(f"\n(b) model only, 256 preloaded frames a call: Keras predict_on_batch "
          f"{fps['keras']:.0f} frames/s; posebatch's Keras engine {fps['posebatch_keras']:.0f}; "
          f"ONNX Runtime (default session) {fps['onnxruntime']:.0f}; posebatch's ONNX engine "
          f"{fps['posebatch_onnx']:.0f}")
    print(f"(c) read + SHA-256 on 2 threads: {rh['files'] / rh['seconds']:.0f} files/s")
    for engine in ("onnx", "keras"):
        st = rows[f"work phase in-process, {engine}"][0]["res"]
        print(f"work phase in-process, {engine} (classify_files, chunks of 2,048): "
              f"{st['frames'] / st['seconds']:.0f} frames/s; stages (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(st["stages"].items())))
    work_fps = d["summary"]["frames"] / d["summary"]["work_seconds"]
    ratios = {
        "end to end vs (a) plain script": (a["wall"] / d["wall"],
                                           1.3 if n_big >= 50_000 else 1.0, ">="),
        "end to end vs (a2) plain script, ONNX Runtime": (a2["wall"] / d["wall"], None, ""),
        "end to end, keras engine, vs (a) plain script": (a["wall"] / dk["wall"], None, ""),
        "end to end, running server, vs (a) plain script": (a["wall"] / dr["wall"], None, ""),
        "work phase vs ONNX model-only ceiling": (work_fps / onnx_ceiling, 0.6, ">="),
        "work phase vs (c) read + hash": (work_fps / (rh["files"] / rh["seconds"]), None, ""),
        "(e) per-frame vs end to end": (e["wall"] / d["wall"], 30.0, ">="),
        "nothing new, own server (s)": (idle["wall"], 1.0, "<="),
        **({"end to end, baseline checkout, vs (a) plain script": (
            a["wall"] / best("(d) posebatch classify, baseline")["wall"], None, "")}
           if args.baseline else {}),
        "nothing new, running server (s)": (idle_run["wall"], 1.0, "<="),
        f"peak RSS (tree) at {n_big:,} files (MB)": (d["rss"], 1024.0, "<="),
        f"peak RSS growth {n_small:,} -> {n_big:,} files (MB)": (d["rss"] - ds["rss"], 100.0,
                                                                  "<"),
        f"peak RSS growth {n_small:,} -> {n_big:,} files, keras (MB)": (dk["rss"] - dks["rss"],
                                                                         None, ""),
    }
    print()
    for name, (value, target, op) in ratios.items():
        verdict = ""
        if target is not None:
            ok = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
            verdict = f" (target {op} {target:g}: {'met' if ok else 'MISSED'})"
        print(f"- {name}: {value:.2f}{verdict}")
    print(f"(machine: {os.cpu_count()} cores; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; {args.repeat} interleaved round(s); data in {work})")


if __name__ == "__main__":
    main()
