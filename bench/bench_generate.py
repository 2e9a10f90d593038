"""Generator throughput (target: thousands of files per second) and data difficulty.

Times ``generate_dataset`` writing a real data root (labeled + incoming files, markers, CSV)
into a temporary folder, and ``synth_frames`` rendering in memory; each timing is the best and
the median of ``--repeat`` runs. Then measures how hard the data is: a logistic regression on
decoded keypoints (``models.keypoints.keypoint_features``), trained on some people and tested
on three it never saw (macro-F1; the data contract asks for 0.80-0.99 on normal data).

    .venv/bin/python bench/bench_generate.py [--per-class 200] [--repeat 3] [--no-difficulty]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def _difficulty(per_class: int, seeds: range) -> list[tuple[str, list[float]]]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from models.keypoints import keypoint_features
    from tasks.synth.generate import synth_dataset

    rows = []
    for hard in (False, True):
        scores = []
        for seed in seeds:
            s = synth_dataset(per_class, seed=seed, hard=hard)
            x, y = keypoint_features(s.frames), np.array(s.labels)
            test = s.subjects >= s.subjects.max() + 1 - 3
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            with threadpool_limits(1):
                clf.fit(x[~test], y[~test])
            scores.append(float(f1_score(y[test], clf.predict(x[test]), average="macro")))
        rows.append(("hard" if hard else "normal", scores))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=200, help="labeled files per class")
    ap.add_argument("--incoming", type=int, default=1000, help="incoming files (10 batches)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-difficulty", action="store_true", help="skip the LR measurement")
    args = ap.parse_args()

    from models.spec import class_names
    from tasks.synth.generate import generate_dataset, synth_frames

    files = args.per_class * 17 + args.incoming
    print(f"{'case':44s} {'files':>7s} {'best s':>8s} {'median s':>9s} {'files/s':>9s}")
    for hard in (False, True):
        with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
            def write(tmp=tmp, hard=hard):
                generate_dataset(Path(tmp), args.per_class, seed=1, incoming_batches=10,
                                 incoming_per_batch=args.incoming // 10, hard=hard)
            best, med = _timed(write, args.repeat)
        name = f"generate_dataset to disk{' (hard)' if hard else ''}"
        print(f"{name:44s} {files:7d} {best:8.2f} {med:9.2f} {files / best:9.0f}")
    labels = class_names() * max(args.per_class // 2, 1)
    best, med = _timed(lambda: synth_frames(labels, seed=1), args.repeat)
    print(f"{'synth_frames in memory':44s} {len(labels):7d} {best:8.2f} {med:9.2f} "
          f"{len(labels) / best:9.0f}")

    if not args.no_difficulty:
        print()
        print("logistic regression on decoded keypoints, 3 held-out people, 100 per class")
        print(f"{'data':8s} {'mean F1':>8s}  per seed")
        for name, scores in _difficulty(100, range(5)):
            print(f"{name:8s} {statistics.mean(scores):8.3f}  "
                  + " ".join(f"{s:.3f}" for s in scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
