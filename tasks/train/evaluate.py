"""Evaluation: metrics on held-out frames, the confusion-matrix figure, the method table.

Pure functions over ``(labels, probabilities)``; nothing here knows about Keras or Prefect,
so the same code scores the CNN, the scikit-learn methods, the baseline and the current
production model re-evaluated on a new split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.calibration import expected_calibration_error


def classification_metrics(labels: np.ndarray, probs: np.ndarray,
                           class_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro and per-class precision/recall/F1, confusion matrix, ECE.

    Macro averages run over the classes present in ``labels`` (a class absent from the test
    side has no recall to average); per-class rows list every class with its support."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n = len(class_names)
    if len(labels) == 0:
        return {"n": 0, "accuracy": None, "macro_f1": None, "macro_precision": None,
                "macro_recall": None, "ece": None, "per_class": {},
                "confusion": np.zeros((n, n), int).tolist()}
    pred = probs.argmax(axis=1)
    present = sorted(set(labels.tolist()))
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=list(range(n)),
                                                 zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(labels, pred, labels=present,
                                                    average="macro", zero_division=0)
    cm = confusion_matrix(labels, pred, labels=list(range(n)))
    per_class = {class_names[i]: {"precision": float(p[i]), "recall": float(r[i]),
                                  "f1": float(f[i]), "support": int(s[i])} for i in range(n)}
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "macro_precision": float(mp),
        "macro_recall": float(mr),
        "macro_f1": float(mf),
        "ece": expected_calibration_error(probs, labels),
        "per_class": per_class,
        "confusion": cm.astype(int).tolist(),
    }


def confusion_png(confusion: list[list[int]] | np.ndarray, class_names: list[str],
                  path: Path, title: str = "Confusion matrix (test)") -> Path:
    """Write the confusion matrix as a PNG (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.5 * n + 3, 0.5 * n + 2.5), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > top / 2 else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def comparison_table(methods: dict[str, dict[str, Any]]) -> str:
    """Markdown table of methods (name -> metrics with accuracy, macro_f1, ece, seconds)."""
    rows = ["| method | accuracy | macro-F1 | macro-P | macro-R | ECE | fit s |",
            "|---|---|---|---|---|---|---|"]
    for name, m in methods.items():
        rows.append(f"| {name} | {_fmt(m.get('accuracy'))} | {_fmt(m.get('macro_f1'))} | "
                    f"{_fmt(m.get('macro_precision'))} | {_fmt(m.get('macro_recall'))} | "
                    f"{_fmt(m.get('ece'))} | {_fmt(m.get('seconds'), 1)} |")
    return "\n".join(rows)


def per_class_table(metrics: dict[str, Any]) -> str:
    rows = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, m in metrics["per_class"].items():
        rows.append(f"| {name} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | "
                    f"{_fmt(m['f1'])} | {m['support']} |")
    return "\n".join(rows)


def confusion_table(confusion: list[list[int]], class_names: list[str]) -> dict[str, list]:
    """The confusion matrix as columns for a Prefect table artifact (one row a true class)."""
    table: dict[str, list] = {"true": list(class_names)}
    for j, name in enumerate(class_names):
        table[name] = [int(row[j]) for row in confusion]
    return table


def confusion_markdown(confusion: list[list[int]], class_names: list[str]) -> str:
    """The confusion matrix as a compact markdown table (classes abbreviated to indices)."""
    n = len(class_names)
    head = "| true \\ pred | " + " | ".join(str(j) for j in range(n)) + " |"
    rows = [head, "|---" * (n + 1) + "|"]
    for i, name in enumerate(class_names):
        rows.append(f"| {i} {name} | " + " | ".join(str(v) if v else "." for v in confusion[i])
                    + " |")
    return "\n".join(rows)


def remap_probabilities(probs: np.ndarray, from_classes: list[str],
                        to_classes: list[str]) -> np.ndarray:
    """Re-order a model's probability columns into another class list (missing: 0)."""
    out = np.zeros((len(probs), len(to_classes)), dtype=np.float64)
    pos = {name: j for j, name in enumerate(to_classes)}
    for i, name in enumerate(from_classes):
        if name in pos:
            out[:, pos[name]] = probs[:, i]
    return out
