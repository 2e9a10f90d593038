"""The training report (``report.md`` in the model's registry folder, and a Prefect artifact).

Plain Markdown built from the run's facts, so a reader sees in one place what data went in,
how it was split, how every method did on the same held-out groups, how well calibrated the
CNN is, and why the model was or was not promoted.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from tasks.train.evaluate import comparison_table, confusion_markdown, per_class_table


def _fmt(v: Any, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


class RetrainSummary(TypedDict):
    """One retrain's facts: built by ``flows/retrain.py``, rendered here into ``report.md``,
    condensed into the model's metadata and the run's JSON. Nested parts stay plain dicts
    (their keys are the metrics of ``tasks/train/evaluate.py``)."""

    created_at: str
    class_names: list[str]
    data: dict[str, Any]          # labeled_dir, files, frames, rejected, ignored, fingerprint
    split: dict[str, Any]         # group_by, method, note, groups, frames per side
    training: dict[str, Any]      # epochs, epochs_run, best_epoch, seed, params, augment, ...
    methods: dict[str, dict[str, Any]]   # method -> metrics on the test split
    calibration: dict[str, Any]   # temperature, ECE before/after, clean and shifted
    shift: dict[str, dict[str, Any]]     # method -> metrics on the shifted test split
    ood: dict[str, Any]           # the out-of-distribution reference (models/ood.py)
    monitor: NotRequired[dict[str, Any]]  # the monitoring reference (tasks/monitor)
    champion: dict[str, Any] | None
    sources: NotRequired[dict[str, Any]]  # synthetic source, feedback, adaptation (tasks/adapt)
    target: NotRequired[dict[str, Any] | None]  # scores on the held-out feedback frames
    label_audit: NotRequired[dict[str, Any]]      # tasks/label/audit.py: doubted files
    promotion_policy: str
    margin: float
    promoted: bool
    promotion_reason: str
    version: NotRequired[str]     # set once the registry has allocated it


def render_report(r: RetrainSummary) -> str:
    """Render the report from the retrain summary (see ``flows.retrain``)."""
    data, split, train = r["data"], r["split"], r["training"]
    cnn = r["methods"]["cnn"]
    cal = r["calibration"]
    lines = [
        f"# Model {r.get('version') or '(unregistered)'}: retraining report",
        "",
        f"- created: {r['created_at']}",
        f"- decision: **{'promoted to production' if r['promoted'] else 'not promoted'}**; "
        f"{r['promotion_reason']}",
        f"- test macro-F1 {_fmt(cnn.get('macro_f1'))}, accuracy {_fmt(cnn.get('accuracy'))}, "
        f"ECE {_fmt(cal['test_ece_before'])} -> {_fmt(cal['test_ece_after'])} "
        f"(temperature {cal['temperature']:.3f})",
        *baseline_warning(r["methods"]),
        "",
        *sources_section(r),
        *audit_section(r),
        "## Data",
        "",
        f"- labeled folder: `{data['labeled_dir']}`",
        f"- classes ({len(r['class_names'])}): {', '.join(r['class_names'])}",
        f"- files accepted {data['files']}, frames {data['frames']}, rejected "
        f"{len(data['rejected'])}, ignored {len(data['ignored'])}",
        f"- data fingerprint: `{data['fingerprint']}`",
    ]
    if data.get("class_distribution"):
        lines.append("- training frames per class: " + ", ".join(
            f"{k} {v}" for k, v in data["class_distribution"].items()))
    if data["rejected"]:
        lines += ["", "Rejected files (not used; training went on without them):", "",
                  "| file | reason | detail |", "|---|---|---|"]
        lines += [f"| {x['path']} | {x['reason']} | {x['detail']} |"
                  for x in data["rejected"][:50]]
        if len(data["rejected"]) > 50:
            lines.append(f"| ... {len(data['rejected']) - 50} more | | |")
    lines += [
        "",
        "## Split",
        "",
        f"- rule: `--group-by {split['group_by']}`; method: **{split['method']} split**"
        + (f" ({split['note']})" if split["note"] else ""),
        f"- frames train/val/test: {split['frames']['train']} / {split['frames']['val']} / "
        f"{split['frames']['test']}",
    ]
    if split["method"] == "group":
        for side in ("train", "val", "test"):
            names = split["groups"].get(side, [])
            shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
            lines.append(f"- {side} groups ({len(names)}): {shown}")
        lines.append("- no group is on two sides")
    lines += [
        "",
        "## Methods on the held-out test split",
        "",
        comparison_table(r["methods"]),
        "",
        "cnn: the deployed Keras CNN (calibrated); logreg / hgb: scikit-learn on keypoint "
        "features; majority: the floor. "
        + ("production: the current production model re-evaluated on this split."
           if "production" in r["methods"] else ""),
        "",
        "## Robustness: the same test files, shifted",
        "",
        "Each test file moved by the training augmentations (pose, crop, peak shape and "
        "height, occlusion, swaps, blobs, noise; no flips), with one fixed seed. The gate "
        "refuses a challenger that is worse here than production by more than the margin.",
        "",
        comparison_table(r["shift"]) if r.get("shift") else "(not measured)",
        "",
        "## Training",
        "",
        f"- epochs run {train['epochs_run']} of {train['epochs']} (best epoch "
        f"{train['best_epoch']}, early stopping on validation loss, cosine learning-rate decay), "
        f"seed {train['seed']}, "
        f"batch {train['batch_size']}, {train['seconds']:.1f} s",
        f"- parameters: `{train['params']}`",
        f"- augmentation: `{train['augment']}`",
    ]
    if train.get("trials"):
        lines += ["", f"Hyperparameter search ({len(train['trials'])} trials, budget "
                  f"{train['tune_budget_seconds']:.0f} s):", "",
                  "| trial | hyperparameters | val loss |", "|---|---|---|"]
        lines += [f"| {t['trial']} | `{t['hyperparameters']}` | {_fmt(t['val_loss'])} |"
                  for t in train["trials"]]
    lines += [
        "",
        "## Calibration",
        "",
        f"Temperature fitted on the {cal.get('fitted_on', 'validation split')}: "
        f"T = {cal['temperature']:.4f}.",
        "",
        "| split | ECE before | ECE after |",
        "|---|---|---|",
        f"| validation | {_fmt(cal['val_ece_before'])} | {_fmt(cal['val_ece_after'])} |",
        f"| test | {_fmt(cal['test_ece_before'])} | {_fmt(cal['test_ece_after'])} |",
        f"| validation, shifted | - | {_fmt(cal.get('val_shift_ece_after'))} |",
        f"| test, shifted | - | {_fmt(cal.get('test_shift_ece_after'))} |",
        "",
        "## CNN per class (test)",
        "",
        per_class_table(cnn) if cnn.get("per_class") else "(no test frames)",
        "",
        "## Confusion matrix (test; rows true, columns predicted)",
        "",
        "![confusion](confusion.png)",
        "",
        confusion_markdown(cnn["confusion"], r["class_names"]),
        "",
    ]
    return "\n".join(lines)


def baseline_warning(methods: dict[str, dict[str, Any]]) -> list[str]:
    """A line at the top when a keypoint baseline beats the deployed CNN on the test split:
    the reader should know before anything else that a simpler method did better here."""
    cnn = methods["cnn"].get("macro_f1")
    best = max(((m.get("macro_f1") or 0.0, name) for name, m in methods.items()
                if name in ("logreg", "hgb")), default=(0.0, ""))
    if cnn is None or best[0] <= cnn:
        return []
    return ["", f"> **Warning:** the {best[1]} baseline ({best[0]:.4f}) beats the deployed "
                f"CNN ({cnn:.4f}) on this test split. With few labeled frames, try "
                "`--source synthetic` or label more frames."]


def audit_section(r: RetrainSummary) -> list[str]:
    """The label audit of the labeled folder (``tasks/label/audit.py``): what it flagged,
    and whether ``--exclude-suspect`` left those files out."""
    a = r.get("label_audit") or {}
    if not a.get("ran"):
        return []
    acc = a["oof_accuracy"].get(a["method"])
    lines = ["## Label audit", "",
             f"- {a['flagged']} of {a['files']} labeled files look mislabeled (confident "
             f"learning on {a['folds']}-fold out-of-sample {a['method']} probabilities, "
             f"accuracy {_fmt(acc)}); "
             + (f"**{len(a['excluded'])} left out** (--exclude-suspect)" if a["excluded"]
                else "all trained on (use --exclude-suspect to leave them out)")]
    if a.get("skipped_classes"):
        lines.append(f"- not checked (too few files): {', '.join(a['skipped_classes'])}")
    if a["suspects"]:
        lines += ["", "| file | given | suggested | label quality |", "|---|---|---|---|"]
        lines += [f"| {x['path']} | {x['given']} | {x['suggested']} | "
                  f"{_fmt(x['label_quality'])} |" for x in a["suspects"][:20]]
    return [*lines, ""]


def sources_section(r: RetrainSummary) -> list[str]:
    """What the model learned from beyond the labeled folder, and what adaptation kept."""
    src = r.get("sources")
    if not src:
        return []
    lines = ["## Sources and adaptation", "",
             f"- source domain: **{src['source']}** ({src['why']}); user frames "
             f"{src['user_frames']} (smallest class {src['user_frames_per_class_min']}), "
             f"synthetic frames {src['synthetic_frames']}, feedback frames trained on "
             f"{src['feedback_train_frames']}"]
    if src.get("synthetic_settings"):
        lines.append(f"- synthetic settings: `{src['synthetic_settings']}`")
    if src.get("transfer"):
        lines.append(f"- training: `{src['transfer']}`")
    fb = src.get("feedback") or {}
    lines.append(f"- feedback: `{fb}`")
    ad = src.get("adaptation") or {}
    lines.append(f"- unlabeled adaptation: kept **{ad.get('kept', 'none')}**"
                 + (f" ({ad['judged_on']})" if ad.get("judged_on") else "")
                 + (f"; {ad['why']}" if ad.get("why") else ""))
    rows = ad.get("candidates") or []
    if rows:
        lines += ["", "| candidate | target validation macro-F1 | stream class entropy | "
                  "pseudo-labeled |", "|---|---|---|---|"]
        lines += [f"| {c['candidate']} | {_fmt(c.get('target_val_macro_f1'))} | "
                  f"{_fmt(c['stream_class_entropy'])} | {c.get('pseudo_labeled', '-')} |"
                  for c in rows]
    target = r.get("target")
    if target:
        prod = target.get("production") or {}
        lines += ["", f"Held-out feedback frames ({target['frames']}, never trained on), "
                  f"next to the labeled folder's test split:", "",
                  "| model | feedback macro-F1 | test split macro-F1 |", "|---|---|---|",
                  f"| cnn | {_fmt(target['challenger'].get('macro_f1'))} | "
                  f"{_fmt(r['methods']['cnn'].get('macro_f1'))} |"]
        if "macro_f1" in prod:
            lines.append(f"| production {prod.get('label', '')} | {_fmt(prod['macro_f1'])} | "
                         f"{_fmt(r['methods'].get('production', {}).get('macro_f1'))} |")
    return [*lines, ""]
