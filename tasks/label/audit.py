"""Labels worth doubting: confident learning over out-of-sample probabilities (no Prefect).

Why out of sample: a model scores its own training labels as right, mistakes included.
Each labeled file is scored by a model that never saw it (k-fold, a file's frames always in
one fold), and cleanlab's ``find_label_issues`` (confident learning, Northcutt et al.; its
NumPy API: the Keras wrapper is gone) flags the files whose given label the out-of-sample
probabilities contradict more than each class's own noise rate allows.

Why not the CNN k times: k folds of the CNN cost k trainings. Logistic regression and
gradient boosting on decoded keypoints cost seconds, and so does logistic regression on the
production CNN's embedding (``cnn``). ``auto`` keeps whichever of these, or the keypoint
models' mean (``ensemble``), gives the given labels the lowest out-of-sample log loss,
since the flags are only as good as the probabilities. bench/bench_labeling.py measures it
(README, "The labeling loop"): precise on a folder the models read well, and flagging many
hard but correct frames on one they read poorly. A file's probabilities are the mean over
its frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("logreg", "hgb", "ensemble", "cnn")
KEYPOINT = ("logreg", "hgb", "ensemble")
MIN_PER_CLASS = 2      # a class with fewer files cannot be checked out of sample


@dataclass
class Audit:
    """Suspect files, most suspect first, with what the out-of-sample model says."""

    method: str
    folds: int
    files: int                     # files checked
    oof_accuracy: dict[str, float] = field(default_factory=dict)   # per method tried
    oof_log_loss: dict[str, float] = field(default_factory=dict)
    suspects: list[dict[str, Any]] = field(default_factory=list)   # index, given, ...
    skipped_classes: list[str] = field(default_factory=list)

    def summary(self, paths: Sequence[str], limit: int = 50) -> dict[str, Any]:
        """JSON-ready: the counts and the first ``limit`` suspects by path."""
        return {"method": self.method, "folds": self.folds, "files": self.files,
                "oof_accuracy": self.oof_accuracy, "oof_log_loss": self.oof_log_loss,
                "flagged": len(self.suspects),
                "skipped_classes": self.skipped_classes,
                "suspects": [{"path": paths[s["index"]], **{k: v for k, v in s.items()
                                                            if k != "index"}}
                             for s in self.suspects[:limit]]}


def out_of_fold(features: list[np.ndarray], labels: np.ndarray, n_classes: int, method: str,
                folds: int = 5, seed: int = 0) -> np.ndarray:
    """Probabilities ``[files, n_classes]`` of each file from a model trained on the other
    folds (stratified by label, a file's frames kept together)."""
    from sklearn.model_selection import StratifiedKFold

    from models.features import fit_predict

    probs = np.zeros((len(features), n_classes))
    k = max(2, min(folds, int(np.bincount(labels).max(initial=0))))
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(
            np.zeros(len(labels)), labels):
        x = np.concatenate([features[i] for i in train])
        y = np.concatenate([np.full(len(features[i]), labels[i]) for i in train])
        xt = np.concatenate([features[i] for i in test])
        p, _ = fit_predict(method, x, y, xt, n_classes, seed)
        starts = np.cumsum([0] + [len(features[i]) for i in test])
        for j, i in enumerate(test):
            probs[i] = p[starts[j]:starts[j + 1]].mean(0)
    return probs


def oof_probabilities(features: list[np.ndarray], y: np.ndarray, n_classes: int,
                      method: str, folds: int, seed: int,
                      embeddings: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of ``method`` (``auto``: of every method there is data
    for), clipped away from 0 and renormalised (cleanlab and the log loss need no zeros).
    ``cnn``: logistic regression on the CNN's embedding of each frame (``embeddings``)."""
    if method == "cnn" and embeddings is None:
        raise ValueError("the cnn audit needs a model (none in the registry)")
    report = [m for m in (METHODS if method == "auto" else (method,))
              if m != "cnn" or embeddings is not None]
    needed = set(report) | ({"logreg", "hgb"} if "ensemble" in report else set())
    probs = {m: out_of_fold(features, y, n_classes, m, folds, seed)
             for m in ("logreg", "hgb") if m in needed}
    if "ensemble" in report:
        probs["ensemble"] = (probs["logreg"] + probs["hgb"]) / 2
    if "cnn" in report:
        probs["cnn"] = out_of_fold(embeddings, y, n_classes, "logreg", folds, seed)
    probs = {m: probs[m] for m in report}
    out = {}
    for m, p in probs.items():
        p = np.clip(p, 1e-6, None)
        out[m] = p / p.sum(1, keepdims=True)
    return out


def audit_labels(features: list[np.ndarray], labels: Sequence[int],
                 class_names: Sequence[str], method: str = "auto", folds: int = 5,
                 seed: int = 0, embeddings: list[np.ndarray] | None = None) -> Audit:
    """Check every file's label (``features``: each file's keypoint features, one row a
    frame; ``embeddings``: the same for a CNN's embedding, ``predict_embedding``).
    Classes with fewer than ``MIN_PER_CLASS`` files are left out and named."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if method not in ("auto", *METHODS):
        raise ValueError(f"unknown audit method {method!r}; use auto or {', '.join(METHODS)}")
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=len(class_names))
    kept_classes = np.flatnonzero(counts >= MIN_PER_CLASS)
    skipped = [class_names[c] for c in np.flatnonzero((counts > 0) & (counts < MIN_PER_CLASS))]
    keep = np.flatnonzero(np.isin(labels, kept_classes))
    result = Audit(method, folds, len(keep), skipped_classes=skipped)
    if len(kept_classes) < 2:
        return result
    remap = {int(c): i for i, c in enumerate(kept_classes)}
    y = np.array([remap[int(v)] for v in labels[keep]])
    probs = oof_probabilities([features[i] for i in keep], y, len(kept_classes), method,
                              folds, seed, None if embeddings is None
                              else [embeddings[i] for i in keep])
    result.oof_accuracy = {m: float(np.mean(p.argmax(1) == y)) for m, p in probs.items()}
    result.oof_log_loss = {m: float(-np.mean(np.log(p[np.arange(len(y)), y])))
                           for m, p in probs.items()}
    result.method = min(probs, key=lambda m: result.oof_log_loss[m])
    p = probs[result.method]
    ranked = find_label_issues(y, p, return_indices_ranked_by="self_confidence")
    score = get_label_quality_scores(y, p)
    for j in ranked:
        result.suspects.append({
            "index": int(keep[j]), "given": class_names[kept_classes[y[j]]],
            "suggested": class_names[kept_classes[int(p[j].argmax())]],
            "label_quality": float(score[j]), "p_given": float(p[j, y[j]])})
    return result


def write_report(folder: Path, summary: dict[str, Any], root: Path,
                 max_frames_per_file: int = 4096) -> dict[str, str]:
    """``audit.csv`` (file, given, suggested, quality, picture) and one PNG per suspect:
    the file's first frame as ``posebatch show`` draws it, with both labels in its title."""
    import csv

    from tasks.io.validate import read_heatmap_file
    from tasks.read.viewer import render_frame

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for n, s in enumerate(summary["suspects"]):
        png = f"images/{n:04d}_{Path(s['path']).stem}.png"
        frame = read_heatmap_file(root / s["path"], max_frames_per_file).frames[0]
        title = f"{s['path']}: labeled {s['given']}, looks like {s['suggested']}"
        (folder / png).write_bytes(render_frame(frame, title, note="label doubted"))
        rows.append({**{k: s[k] for k in ("path", "given", "suggested", "label_quality")},
                     "image": png})
    with open(folder / "audit.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.DictWriter(fh, ["path", "given", "suggested", "label_quality", "image"])
        out.writeheader()
        out.writerows(rows)
    return {"csv": str(folder / "audit.csv"), "images": str(folder / "images")}


def file_embeddings(model: Any, scan: Any, max_frames: int = 4096,
                    batch_frames: int = 1024) -> list[np.ndarray]:
    """Each labeled file's frames embedded by ``model`` (``predict_embedding``), read
    through the validator and embedded a batch of files at a time."""
    from models.network import predict_embedding
    from tasks.io.validate import read_heatmap_file

    out: list[np.ndarray] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            emb = predict_embedding(model, np.concatenate(pending))
            cuts = np.cumsum([len(p) for p in pending])[:-1]
            out.extend(np.split(emb, cuts))
            pending.clear()

    for f in scan.files:
        pending.append(read_heatmap_file(f.file.path, max_frames).frames)
        if sum(len(p) for p in pending) >= batch_frames:
            flush()
    flush()
    return out


def audit_scan(scan: Any, method: str = "auto", folds: int = 5, seed: int = 0,
               model: Any = None, max_frames: int = 4096) -> Audit:
    """``audit_labels`` over a scanned labeled folder (``tasks.train.dataset.Scan``);
    ``model``: a CNN whose embedding the ``cnn`` method uses (e.g. production's)."""
    emb = file_embeddings(model, scan, max_frames) if model is not None and \
        method in ("auto", "cnn") else None
    return audit_labels([f.features for f in scan.files], scan.labels(), scan.class_names,
                        method, folds, seed, emb)


def production_model(registry_dir: Path | str) -> Any:
    """The registry's production CNN for the ``cnn`` method; None when there is none."""
    from models.registry import Registry, load_model

    reg = Registry(registry_dir)
    return load_model(reg.resolve()) if reg.production_version() else None


def retrain_audit(scan: Any, exclude: bool, method: str = "auto", folds: int = 5,
                  seed: int = 0, model: Any = None) -> tuple[Any, dict[str, Any]]:
    """``retrain``'s check of its labeled folder: (the scan to train on, the summary for
    the metadata and report). With ``exclude`` the suspect files are left out, and named."""
    import dataclasses

    paths = [f.file.rel for f in scan.files]
    found = audit_scan(scan, method, folds, seed, model)
    summary = {"ran": True, **found.summary(paths), "excluded": []}
    if exclude and found.suspects:
        out = {s["index"] for s in found.suspects}
        summary["excluded"] = sorted(paths[i] for i in out)
        scan = dataclasses.replace(scan, files=[f for i, f in enumerate(scan.files)
                                                if i not in out])
    return scan, summary
