"""The work phase on each engine and ONNX Runtime setting, interleaved, in fresh processes.

    .venv/bin/python bench/bench_engines.py --input DIR --registry DIR [--files 4096]
        [--rounds 2] [--configs nospin-64,nospin-128,nospin-256,spin-256,keras]

Each config is one fresh process running ``tasks.classify.infer.classify_files`` over the
first ``--files`` files of ``--input`` in chunks of 2,048, on the production version of
``--registry`` (it needs a verified ``model.onnx``: ``bench/bench_classify.py`` leaves one in
``WORK/data/registry``). A config ``spin-N``/``nospin-N`` is ONNX Runtime with its worker
threads spinning or not between ops, and batches run in slices of N frames
(``tasks.classify.engine.ONNX_CALL_FRAMES``); ``keras`` is the Keras engine. Prints frames/s
(wall), CPU microseconds per frame and the model's seconds (``compute``) per run, with the
load average: on a shared machine compare configs within a round, not across rounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE = """
import os, sys, time
from pathlib import Path
import tasks.classify.engine as eng
import tasks.classify.infer as infer
from models.onnx_artifact import onnx_session
from models.registry import Registry
cfg, inp, reg, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rels = [(p.relative_to(inp).as_posix(), p.stat().st_size)
        for p in sorted(Path(inp).rglob('*.npy'))[:n]]
engine = 'keras' if cfg == 'keras' else 'onnx'
if engine == 'onnx':
    spin, frames = cfg.split('-')
    eng.ONNX_CALL_FRAMES = int(frames)
    def session(data, threads=None):
        s = onnx_session(data, threads)
        return s
    if spin == 'spin':
        import onnxruntime as ort
        def session(data, threads=None):
            import models.onnx_artifact as oa
            o = ort.SessionOptions()
            o.intra_op_num_threads = oa.usable_cores()
            o.inter_op_num_threads = 1
            o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            return ort.InferenceSession(data, o, providers=['CPUExecutionProvider'])
    eng.onnx_session = session
version = Registry(reg).resolve().version
infer.load_predictor(reg, version, 256, engine=engine)
t, c, model = time.perf_counter(), time.process_time(), 0.0
for i in range(0, len(rels), 2048):
    model += infer.classify_files(inp, rels[i:i + 2048], reg, version, 256,
                                  engine=engine).seconds['compute']
wall, cpu = time.perf_counter() - t, time.process_time() - c
print(f'{cfg}: {len(rels) / wall:.0f} frames/s, {cpu / len(rels) * 1e6:.0f} us CPU/frame, '
      f'compute {model:.1f} s, load {os.getloadavg()[0]:.1f}')
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--files", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", default="nospin-64,nospin-128,nospin-256,spin-256,keras")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}:")
        for cfg in args.configs.split(","):
            out = subprocess.run([sys.executable, "-c", ONE, cfg, args.input, args.registry,
                                  str(args.files)], env=env, capture_output=True, text=True,
                                 check=True, cwd=ROOT).stdout
            print("  " + out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
