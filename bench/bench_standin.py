"""Sanity of the stand-in renderer (``bench/standin.py``): is it the same poses, drawn differently?

    .venv/bin/python bench/bench_standin.py [--seeds 0 1 2] [--per-class 80] [--people 8]

Per strength (moderate, hard) and seed, prints:

1. decode round trip: distance (grid px) between ``models.keypoints.decode`` and the stand-in's
   skeleton joints, over joints that are visible, on the grid, and not swapped or hit by a
   distractor (median and 90th percentile);
2. in-domain difficulty: the keypoint logistic regression (scaler + ``LogisticRegression`` on
   ``keypoint_features``) trained on half the people (``per_class/2`` frames a class), macro-F1
   on the other half (expected well above chance, well below 1);
3. cross-domain: the same model trained on the project's generator
   (``synth_dataset(per_class=60, seed=0)``), macro-F1 on all the stand-in frames.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from standin import STRENGTHS, standin_sample  # noqa: E402


def _logreg():  # the project's "logreg" method (models.features)
    from models.features import make_method

    return make_method("logreg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--people", type=int, default=8)
    args = parser.parse_args()
    from sklearn.metrics import f1_score
    from threadpoolctl import threadpool_limits

    from models.keypoints import decode, keypoint_features
    from models.spec import class_names
    from tasks.synth.generate import synth_dataset

    names = class_names()
    gen = synth_dataset(per_class=60, seed=0)
    with threadpool_limits(limits=1):
        on_gen = _logreg().fit(keypoint_features(gen.frames),
                               [names.index(x) for x in gen.labels])
    print(f"{'strength':9} {'seed':>4} {'clean':>6} {'median px':>9} {'p90 px':>7} "
          f"{'F1 in-domain':>12} {'F1 from generator':>17}")
    for strength in STRENGTHS:
        for seed in args.seeds:
            s = standin_sample(names, args.per_class, args.people, seed, strength)
            err = np.linalg.norm(decode(s.frames)[0] - s.joints, axis=-1)[s.clean]
            x, train = keypoint_features(s.frames), s.persons < args.people // 2
            with threadpool_limits(limits=1):
                pred = _logreg().fit(x[train], s.labels[train]).predict(x[~train])
                cross = on_gen.predict(x)
            f1 = f1_score(s.labels[~train], pred, average="macro")
            f1_cross = f1_score(s.labels, cross, average="macro")
            print(f"{strength:9} {seed:4d} {s.clean.mean():6.0%} {np.median(err):9.2f} "
                  f"{np.quantile(err, 0.9):7.2f} {f1:12.3f} {f1_cross:17.3f}")


if __name__ == "__main__":
    main()
