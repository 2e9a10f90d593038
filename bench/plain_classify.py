"""A competent plain script for the same job, the baseline ``posebatch classify`` must beat.

    .venv/bin/python bench/plain_classify.py MODEL_DIR INPUT_DIR OUT.parquet [--batch 256]
        [--threads 2]

``MODEL_DIR`` holds ``model.keras`` and ``metadata.json`` (class names, temperature), e.g. a
registry version folder. Every ``*.npy`` under ``INPUT_DIR`` (sorted) is loaded with
``np.load`` on a thread pool, the next batch while ``model.predict_on_batch`` runs on the
current one; ``softmax(logits / T)`` gives a label and its confidence; one Parquet file of
``source_path, label, confidence`` is written at the end. No validation, no hashing, no
ledger, one frame per file (the reference data set's format): what someone would write in
an afternoon, done well. TensorFlow's import and the model load are part of its run, as
they are of ``posebatch classify``'s.
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
    import keras
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = json.loads((args.model_dir / "metadata.json").read_text())
    names, temperature = meta["class_names"], float(meta.get("temperature", 1.0))
    model = keras.models.load_model(args.model_dir / "model.keras", compile=False)
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
            p = softmax(np.asarray(model.predict_on_batch(x)), temperature)
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
