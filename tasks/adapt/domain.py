"""Adapting a trained model to the unlabeled production stream, and keeping only what helps.

The candidates, each built on the one before: the model as trained; AdaBN (its batch-norm
statistics re-estimated on the stream, ``batchnorm.py``); then up to ``rounds`` rounds of
self-training on class-balanced pseudo-labels (``selftrain.py``), each followed by AdaBN
again, since fine-tuning on a mix of domains moves the statistics back toward the mix.

Which one is kept:

- with labeled target frames (the user's own validation files): the candidate with the
  best macro-F1 on them; a tie keeps the less adapted one, so adapting can never come out
  worse there than not adapting;
- without any: a label-free guard only. A candidate whose predicted class mix on the
  stream has lost more than a fifth of the trained model's entropy has collapsed and is
  dropped; of the rest the most adapted is kept, and the result says it was judged on no
  label, which the promotion gate turns into "only with ``--promote always``". A
  self-trained model flatters its own confidence, so nothing label-free is evidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.adapt.selftrain import ROUND_STEPS, THRESHOLD, marginal_entropy

COLLAPSE_RATIO = 0.8


def _temperature(model: Any, val: tuple[np.ndarray, np.ndarray]) -> float:
    from models.calibration import fit_temperature
    from models.network import predict_logits

    if not len(val[1]):
        return 1.0
    return float(fit_temperature(predict_logits(model, val[0]), val[1]))


def macro_f1(model: Any, data: tuple[np.ndarray, np.ndarray], class_names: list[str]) -> float:
    """A model's macro-F1 on labeled frames: what both adaptation's and transfer's choices
    judge candidates by."""
    from models.calibration import softmax
    from models.network import predict_logits
    from tasks.train.evaluate import classification_metrics

    probs = softmax(predict_logits(model, data[0]))
    return float(classification_metrics(data[1], probs, class_names)["macro_f1"])


def candidates(model: Any, unlabeled: np.ndarray, labeled: tuple[np.ndarray, np.ndarray],
               val: tuple[np.ndarray, np.ndarray], class_names: list[str], *, rounds: int = 2,
               seed: int = 0, augment: Any = None, threshold: float = THRESHOLD,
               steps: int = ROUND_STEPS, progress: Any = None
               ) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(name, model, info)`` for the trained model, AdaBN and each self-training round."""
    from tasks.adapt.batchnorm import adapt_batchnorm
    from tasks.adapt.selftrain import self_train_round

    say = progress or (lambda msg: None)
    say(f"AdaBN: batch-norm statistics from {len(unlabeled)} unlabeled frame(s)")
    current = adapt_batchnorm(model, unlabeled)
    out: list[tuple[str, Any, dict[str, Any]]] = [("none", model, {}), ("adabn", current, {})]
    for r in range(1, rounds + 1):
        say(f"self-training round {r}/{rounds}")
        tuned, info = self_train_round(current, labeled, unlabeled, _temperature(current, val),
                                       class_names, None, seed=seed + r, threshold=threshold,
                                       steps=steps, augment=augment)
        if tuned is None:
            break
        current = adapt_batchnorm(tuned, unlabeled)
        out.append((f"self-training x{r}", current, info))
    return out


def choose(cands: list[tuple[str, Any, dict[str, Any]]], unlabeled: np.ndarray,
           target_val: tuple[np.ndarray, np.ndarray] | None, class_names: list[str]
           ) -> tuple[Any, dict[str, Any]]:
    """The kept candidate and the record of the choice (every candidate's scores)."""
    from models.calibration import softmax
    from models.network import predict_logits

    rows = []
    for name, model, info in cands:
        ent = marginal_entropy(softmax(predict_logits(model, unlabeled)))
        row = {"candidate": name, "stream_class_entropy": round(ent, 4), **info}
        if target_val is not None and len(target_val[1]):
            row["target_val_macro_f1"] = round(macro_f1(model, target_val, class_names), 4)
        rows.append(row)
    floor = COLLAPSE_RATIO * rows[0]["stream_class_entropy"]
    if target_val is not None and len(target_val[1]):
        best = max(range(len(rows)), key=lambda i: (rows[i]["target_val_macro_f1"], -i))
        judged = f"macro-F1 on {len(target_val[1])} labeled target validation frame(s)"
    else:
        ok = [i for i, r in enumerate(rows) if r["stream_class_entropy"] >= floor]
        best = max(ok)
        judged = "no target labels: label-free collapse guard only"
    return cands[best][1], {"kept": rows[best]["candidate"], "judged_on": judged,
                            "target_labels": bool(target_val is not None
                                                  and len(target_val[1])),
                            "unlabeled_frames": int(len(unlabeled)), "candidates": rows}
