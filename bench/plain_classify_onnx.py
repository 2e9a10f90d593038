"""The plain script of ``bench/plain_classify.py`` with ONNX Runtime in place of Keras.

    .venv/bin/python bench/plain_classify_onnx.py MODEL_DIR INPUT_DIR OUT.parquet
        [--batch 256] [--threads 2]

``MODEL_DIR`` holds ``model.onnx`` and ``metadata.json`` (a registry version folder after
``posebatch models export-onnx``). Same job, same loop: ``np.load`` of the next batch on a
thread pool while ONNX Runtime (a default CPU session, as a user would open it) runs the
current one, ``softmax(logits / T)``, one Parquet of ``source_path, label, confidence``.
Beside the Keras script it shows how much of posebatch's gain is the engine and how much is
the pipeline. No posebatch import: a user's afternoon, done well.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("input_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = json.loads((args.model_dir / "metadata.json").read_text())
    names, temperature = meta["class_names"], float(meta.get("temperature", 1.0))
    session = ort.InferenceSession(str(args.model_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    files = sorted(args.input_dir.rglob("*.npy"))
    t_ready = time.perf_counter()
    batches = [files[i:i + args.batch] for i in range(0, len(files), args.batch)]
    labels: list[np.ndarray] = []
    confidence: list[np.ndarray] = []
    with ThreadPoolExecutor(args.threads) as pool:
        def load(paths: list[Path]) -> list:
            return [pool.submit(np.load, p) for p in paths]

        pending = load(batches[0]) if batches else []
        for i in range(len(batches)):
            x = np.concatenate([f.result() for f in pending]).astype(np.float32, copy=False)
            pending = load(batches[i + 1]) if i + 1 < len(batches) else []
            p = softmax(session.run(None, {feed: x})[0], temperature)
            labels.append(p.argmax(axis=1))
            confidence.append(p.max(axis=1))
    label = np.concatenate(labels) if labels else np.zeros(0, int)
    pq.write_table(pa.table({
        "source_path": [f.relative_to(args.input_dir).as_posix() for f in files],
        "label": pa.array([names[i] for i in label.tolist()], pa.string()),
        "confidence": pa.array(np.concatenate(confidence) if confidence else [], pa.float32()),
    }), args.out)
    print(json.dumps({"files": len(files), "seconds": time.perf_counter() - t0,
                      "work_seconds": time.perf_counter() - t_ready}))


if __name__ == "__main__":
    main()
