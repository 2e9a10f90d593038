"""The model alone, or the work phase, on each engine and ONNX Runtime setting, interleaved,
in fresh processes.

    .venv/bin/python bench/bench_engines.py --input DIR --registry DIR [--files 4096]
        [--rounds 2] [--mode work|model]
        [--configs nospin-128,nospin-256,spin-256,default,keras]

Each config is one fresh process on the production version of ``--registry`` (it needs a
verified ``model.onnx``: ``bench/bench_classify.py`` leaves one in ``WORK/data/registry``).

- ``--mode work``: ``tasks.classify.infer.classify_files`` over the first ``--files`` files
  of ``--input`` in chunks of 2,048 (reading, hashing, validation, copy, model, OOD).
- ``--mode model``: the predictor alone on 256 preloaded frames, ``--files`` frames in all.

A config ``spin-N``/``nospin-N`` is posebatch's ONNX engine with ONNX Runtime's worker
threads spinning or not between ops (``session.intra_op.allow_spinning``), ``stopspin-N``
spinning within a call only (``session.force_spinning_stop``), and batches run in slices of
N frames (``tasks.classify.engine.ONNX_CALL_FRAMES``); a ``-noarena`` suffix turns ONNX
Runtime's CPU memory arena off, ``-tK`` runs it on K threads (default: the cores).
``default`` is a default ``InferenceSession`` (what a user opens) behind the same engine, one
call per batch; ``keras`` is the Keras engine. Prints frames/s (wall), CPU microseconds per
frame, the model's seconds and the process's peak RSS, with the load average: on a shared
machine compare configs within a round, not across rounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE = """
import os, resource, sys, time
from pathlib import Path
import numpy as np
import tasks.classify.engine as eng
import tasks.classify.infer as infer
import models.onnx_artifact as oa
from models.registry import Registry
cfg, mode, inp, reg, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
paths = sorted(Path(inp).rglob('*.npy'))[:n]
engine = 'keras' if cfg == 'keras' else 'onnx'
if engine == 'onnx':
    import onnxruntime as ort
    parts = cfg.split('-')
    def session(data, threads=None):
        if parts[0] == 'default':
            return ort.InferenceSession(data, providers=['CPUExecutionProvider'])
        o = ort.SessionOptions()
        threads = [int(p[1:]) for p in parts if p[:1] == 't' and p[1:].isdigit()]
        o.intra_op_num_threads = threads[0] if threads else oa.usable_cores()
        o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        o.add_session_config_entry('session.intra_op.allow_spinning',
                                   '0' if parts[0] == 'nospin' else '1')
        if parts[0] == 'stopspin':
            o.add_session_config_entry('session.force_spinning_stop', '1')
        o.enable_cpu_mem_arena = 'noarena' not in parts
        return ort.InferenceSession(data, o, providers=['CPUExecutionProvider'])
    eng.ONNX_CALL_FRAMES = 256 if parts[0] == 'default' else int(parts[1])
    eng.onnx_session = session
version = Registry(reg).resolve().version
pred = infer.load_predictor(reg, version, 256, engine=engine)
t, c, model = time.perf_counter(), time.process_time(), 0.0
if mode == 'work':
    rels = [(p.relative_to(inp).as_posix(), p.stat().st_size) for p in paths]
    for i in range(0, len(rels), 2048):
        model += infer.classify_files(inp, rels[i:i + 2048], reg, version, 256,
                                      engine=engine).seconds['compute']
else:
    buf = eng.aligned_zeros((256, 17, 64, 48))
    buf[:] = np.concatenate([np.load(p) for p in paths[:256]])
    pred(buf)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(max(1, n // 256)):
        pred(buf)
    n = max(1, n // 256) * 256
    model = time.perf_counter() - t
wall, cpu = time.perf_counter() - t, time.process_time() - c
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f'{cfg}: {n / wall:.0f} frames/s, {cpu / n * 1e6:.0f} us CPU/frame, '
      f'model {model:.2f} s, peak RSS {rss:.0f} MB, load {os.getloadavg()[0]:.1f}')
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--files", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mode", choices=("work", "model"), default="work")
    ap.add_argument("--configs", default="nospin-128,nospin-256,spin-256,default,keras")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}:")
        for cfg in args.configs.split(","):
            out = subprocess.run([sys.executable, "-c", ONE, cfg, args.mode, args.input,
                                  args.registry, str(args.files)], env=env, capture_output=True,
                                 text=True, check=True, cwd=ROOT).stdout
            print("  " + out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
