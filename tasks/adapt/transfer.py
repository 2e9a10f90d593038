"""Transfer from our synthetic frames to the user's labels: pretrain and fine-tune, or mixed.

- ``finetune``: a CNN pretrained on the synthetic frames alone (cached under the data root,
  keyed by everything that shapes it, so the next retrain with the same settings skips the
  pretraining), then fine-tuned on the user's training files at a lower learning rate;
- ``mixed``: one CNN trained on the synthetic files and the user's, the user's repeated to
  about ``MIX_SHARE`` of the files (``sources.oversampled``).

Both count their training length in optimizer steps with a floor (``fit.steps_plan``), and
early stopping on the validation split (the user's and the synthetic one) guards both.
Which is the default is measured by ``bench/bench_adapt.py`` (README, "Learning from your
own heatmaps").

Either way the synthetic-only model is a candidate too: with few labels the user's frames
can pull a model below what our generator alone gives (measured, by about 0.01 macro-F1 at
10 labels a class), so the two are compared on the user's own validation files and the
synthetic-only one is kept only when it scores strictly higher there. It is the pretrained
model, cached, so the comparison costs one training per synthetic setting, not per retrain.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tasks.adapt.sources import TrainingSet, oversampled
from tasks.adapt.synthetic import settings_key

FINETUNE_LR = 5e-4


def pretrain_key(synthetic: dict[str, Any], class_names: list[str], recipe: dict[str, Any]
                 ) -> dict[str, Any]:
    """Everything a pretrained model depends on (its cache key)."""
    import keras

    return {"synthetic": synthetic, "class_names": list(class_names), "recipe": recipe,
            "keras": keras.__version__}


def pretrained(cache_root: Path | str, ts: TrainingSet, key: dict[str, Any],
               fit: Any, say: Any = None) -> tuple[Any, dict[str, Any]]:
    """The CNN trained on the synthetic files only: loaded from the cache, or trained by
    ``fit(train_idx, val_idx)`` and cached (written aside, then renamed)."""
    import keras

    root = Path(cache_root) / "pretrained" / settings_key(key)
    if (root / "model.keras").is_file():
        (say or (lambda m: None))(f"pretrained model from the cache ({root.name})")
        info = json.loads((root / "pretrain.json").read_text(encoding="utf-8"))
        return keras.models.load_model(root / "model.keras"), {**info, "cached": True}
    (say or (lambda m: None))("pretraining on the synthetic frames (cached for next time)")
    result = fit(ts.synthetic["train"], ts.synthetic["val"])
    info = {"key": key, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 1), "cached": False}
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root.parent))
    try:
        result.model.save(tmp / "model.keras")
        (tmp / "pretrain.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        try:
            tmp.rename(root)
        except OSError:
            if not (root / "model.keras").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result.model, info


def train_with_synthetic(strategy: str, ts: TrainingSet, cache_root: Path | str,
                         key: dict[str, Any], fit: Any, say: Any = None,
                         max_frames: int = 4096) -> tuple[Any, dict]:
    """Train for ``strategy``; ``fit(train_idx, val_idx, init_model=None, learning_rate=None)``
    is the flow's one training recipe. Returns the ``TrainResult`` kept (the strategy's, or
    the synthetic-only one when it is better on the user's validation files) and what was
    done."""
    from tasks.train.fit import TrainResult

    say = say or (lambda m: None)
    if strategy not in ("mixed", "finetune"):
        raise ValueError(f"unknown transfer strategy {strategy!r}")
    base, pre = pretrained(cache_root, ts, key, fit, say)
    base_result = TrainResult(base, {}, pre["epochs_run"], pre["best_epoch"], {}, 0.0)
    if not ts.split.train:  # no labeled target frames: the pretrained model is the result
        return base_result, {"strategy": strategy, "pretrain": pre, "trained_on_user": False}
    if strategy == "mixed":
        train = oversampled(ts.split.train, ts.synthetic["train"])
        say(f"training on {len(train)} file(s): synthetic, and the user's repeated")
        result = fit(train, ts.split.val)
        info = {"strategy": "mixed", "train_files": len(train), "pretrain": pre}
    else:
        say(f"fine-tuning on {len(ts.split.train)} labeled file(s)")
        result = fit(ts.split.train, ts.split.val, init_model=base, learning_rate=FINETUNE_LR)
        info = {"strategy": "finetune", "pretrain": pre, "finetuned": True}
    kept, versus = keep_better(result, base_result, ts, max_frames)
    say(f"kept: {versus['kept']} ({versus['judged_on']})")
    return kept, {**info, "trained_on_user": True, "versus_synthetic_only": versus}


def keep_better(trained: Any, synthetic_only: Any, ts: TrainingSet, max_frames: int
                ) -> tuple[Any, dict[str, Any]]:
    """The model trained with the user's frames, unless the synthetic-only one scores
    strictly higher macro-F1 on the user's validation files (a tie keeps the user's: it has
    seen their domain). No user validation files: nothing to judge on, keep the user's."""
    from tasks.adapt.domain import macro_f1
    from tasks.train.dataset import load_frames

    val = load_frames(ts.scan, ts.target_val, max_frames)
    if not len(val[1]):
        return trained, {"kept": "trained", "judged_on": "no user validation files"}
    scores = {name: round(macro_f1(r.model, val, ts.scan.class_names), 4)
              for name, r in (("trained", trained), ("synthetic only", synthetic_only))}
    kept = "synthetic only" if scores["synthetic only"] > scores["trained"] else "trained"
    return (synthetic_only if kept == "synthetic only" else trained), {
        "kept": kept, "judged_on": f"macro-F1 on {len(val[1])} user validation frame(s)",
        "val_macro_f1": scores}
