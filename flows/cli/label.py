"""Commands: ``posebatch label suggest|import|audit``: the labeling loop (docs/labeling.md).

Frames worth a person's time out (PNGs, a CSV, Label Studio tasks), labels back in through
the one feedback store, and labels worth doubting in a labeled folder. Plain functions of
``tasks/label`` do the work; nothing heavy is imported before a command runs.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.classify import InputOpt, OutputOpt, _str
from flows.cli.common import (
    DataOpt,
    JsonOpt,
    emit,
    fail,
    local_path,
    registry_location,
    setup,
)
from flows.cli.query import SinceOpt

app = typer.Typer(help="The labeling loop: suggest frames to label, import the labels, "
                  "audit a labeled folder.", no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None)

LabeledOpt = Annotated[str | None, typer.Option(
    "--labeled", help="Labeled folder, one sub-folder per class [default: DATA/labeled].",
    parser=local_path,
    show_default=False)]


def register(root: typer.Typer) -> None:
    """Add the ``label`` group."""
    root.add_typer(app, name="label")


def _say(message: str) -> None:
    """Progress and notes go to stderr, so stdout stays the result (and --json clean)."""
    typer.echo(message, err=True)


def _progress(what: str):
    """Ten progress lines on stderr (a bar would need a terminal; these work in logs)."""
    step = {"n": 0}

    def show(done: int, total: int) -> None:
        if total and (done == total or done * 10 // total > step["n"]):
            step["n"] = done * 10 // total
            typer.echo(f"{what}: {done}/{total}", err=True)
    return show


@app.command("suggest")
def suggest(
    n: Annotated[int, typer.Option("--n", min=1, help="Frames to suggest (85: five a "
                                   "class).")] = 85,
    strategy: Annotated[str, typer.Option(
        "--strategy", help="auto (typical-and-diverse while fewer than 10 labels a class, "
        "then margin with a diversity step), typical, margin, or random (for comparison).")
    ] = "auto",
    since: SinceOpt = None,
    batch: Annotated[list[str] | None, typer.Option(
        "--batch", help="Only this batch (top-level input folder); repeatable.",
        show_default=False)] = None,
    to: Annotated[str | None, typer.Option(
        "--to", help="Labeling folder to write [default: DATA/labeling/<UTC time>].",
        parser=local_path,
        show_default=False)] = None,
    pool: Annotated[int, typer.Option("--pool", min=1, help="Choose among at most this "
                                      "many frames (a seeded sample).")] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample and "
                                      "clustering.")] = 0,
    image_url_prefix: Annotated[str | None, typer.Option(
        "--image-url-prefix", help="Label Studio image URL before images/...png [default: "
        "/data/local-files/?d=<the folder, absolute, without its leading />].",
        show_default=False)] = None,
    input_dir: InputOpt = None,
    output_dir: OutputOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pick the classified frames most worth labeling (never one labeled already) and
    write a labeling folder: one PNG per frame, labels.csv to fill in, and Label Studio
    tasks with the model's label as a pre-annotation."""
    from models.spec import class_names
    from tasks.label.pool import COLUMNS, class_names_of
    from tasks.label.select import STRATEGIES
    from tasks.label.suggest import suggest as run
    from tasks.read.query import QueryError, read_predictions

    if strategy not in STRATEGIES:
        fail(f"--strategy {strategy}: use one of {', '.join(STRATEGIES)}", as_json)
    settings = setup(data)
    out = _str(output_dir, settings.output_dir)
    inp = _str(input_dir, settings.incoming_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        folder = Path(to or settings.data_root / "labeling" / stamp)
        preds = read_predictions(out, since=since, batches=batch, columns=COLUMNS)
    except (ValueError, QueryError) as exc:
        fail(str(exc), as_json)
    if preds.num_rows == 0:
        fail(f"no classified frames under {out} match --since/--batch", as_json, code=1)
    prefix = image_url_prefix if image_url_prefix is not None else \
        "/data/local-files/?d=" + str(folder.resolve()).lstrip("/") + "/"
    names = class_names_of(preds, class_names())
    result = run(preds, out, inp, folder, n=n, strategy=strategy, class_names=names,
                 pool_size=pool, seed=seed, image_url_prefix=prefix, say=_say,
                 progress=_progress("reading frames"))
    if not result["picked"]:
        fail(f"every frame under {out} matching the filters is labeled already, or none "
             "could be read", as_json, code=1)
    emit({"ok": True, "output": out, **result}, as_json,
         f"{result['picked']} frames to label ({result['used']}) in {result['folder']}:\n"
         f"  fill in {result['csv']}, then: posebatch label import {result['csv']}\n"
         f"  or import {result['label_studio_tasks']} into Label Studio "
         f"(config: {result['label_studio_config']})")


@app.command("import")
def import_(
    labels_file: Annotated[Path, typer.Argument(
        help="The filled labels.csv, or Label Studio's JSON export (JSON or JSON_MIN) of "
        "the tasks `label suggest` wrote.", parser=local_path)],
    materialise: Annotated[bool, typer.Option(
        "--materialise", help="Also mirror every recorded label into "
        "LABELED/<class>/feedback/ as one .npy a frame.")] = False,
    labeled: LabeledOpt = None,
    input_dir: InputOpt = None,
    output_dir: OutputOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record the labels through the feedback store (what monitor and retrain use). The
    same file twice records nothing twice; unknown classes, frames that match nothing and
    frames whose content changed are counted and named, never guessed."""
    from models.spec import class_names
    from tasks.label.intake import import_labels, materialise_feedback
    from tasks.label.sheet import read_labels
    from tasks.monitor.feedback import PREDICTION_COLUMNS
    from tasks.read.query import QueryError, read_predictions

    settings = setup(data)
    out = _str(output_dir, settings.output_dir)
    try:
        target = Path(labeled or settings.labeled_dir)
        labels = read_labels(labels_file)
        preds = read_predictions(out, columns=PREDICTION_COLUMNS)
    except (OSError, ValueError, QueryError) as exc:
        fail(str(exc), as_json)   # LabelsError, a missing file, a bad output: one line
    if labels.num_rows == 0:
        fail(f"{labels_file}: no row has a label yet", as_json, code=1)
    result = {"ok": True, "labels_file": str(labels_file), "output": out,
              **import_labels(labels, preds, class_names(), out)}
    if result["matched_frames"] == 0:
        first = (result["unmatched"] or result["changed"] or ["?"])[0]
        fail(f"none of the {labels.num_rows} labeled rows matches a classified frame under "
             f"{out} (first: {first})", as_json)
    if materialise:
        result["materialised"] = materialise_feedback(
            out, _str(input_dir, settings.incoming_dir), target, class_names())
    emit(result, as_json, _import_human(result))


def _import_human(r: dict[str, Any]) -> str:
    state = "recorded" if r["recorded"] else "already recorded (nothing new)"
    lines = [f"{r['rows']} labels: {r['matched_frames']} frames {state}"]
    for what, key in (("unknown class", "unknown_class"), ("no such classified frame",
                                                           "unmatched"),
                      ("content changed since it was suggested", "changed")):
        count = r[f"{key}_rows"]
        if count:
            names = r[key][:3] if key != "unknown_class" else [
                f"{x['source_path']}: {x['true_label']!r}" for x in r[key][:3]]
            lines.append(f"  {count} rows: {what} ({'; '.join(map(str, names))})")
    if "materialised" in r:
        m = r["materialised"]
        lines.append(f"  {m['folder']}/*/feedback: {m['frames']} frames ({m['written']} "
                     f"written, {m['removed']} removed, {m['unreadable_frames']} unreadable)")
    return "\n".join(lines)


@app.command("audit")
def audit(
    labeled: LabeledOpt = None,
    method: Annotated[str, typer.Option(
        "--method", help="auto (whichever gives the labels the lowest out-of-sample log "
        "loss), logreg or hgb (keypoints), ensemble (their mean), or cnn (logistic "
        "regression on the production model's embedding).")] = "auto",
    registry: Annotated[str | None, typer.Option(
        "--registry", help="Registry whose production model cnn uses, a folder or "
        "s3://bucket/prefix [default: DATA/registry; none there: keypoint methods only].",
        show_default=False, parser=registry_location)] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds.")] = 5,
    to: Annotated[str | None, typer.Option(
        "--to", help="Report folder [default: DATA/label-audit/<UTC time>].",
        parser=local_path,
        show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find labeled files whose label looks wrong: out-of-sample probabilities from
    k-fold keypoint models, then cleanlab's confident learning. Writes audit.csv (file,
    given label, suggested label, quality score) and a PNG per suspect."""
    from tasks.label.audit import METHODS, audit_scan, production_model, write_report
    from tasks.train.dataset import scan_labeled

    if method not in ("auto", *METHODS):
        fail(f"--method {method}: use auto or {', '.join(METHODS)}", as_json)
    settings = setup(data)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        root = Path(labeled or settings.labeled_dir)
        folder = Path(to or settings.data_root / "label-audit" / stamp)
        scan = scan_labeled(root, "subject", settings.max_frames_per_file,
                            progress=_progress("scanning"))
        model = production_model(registry or str(settings.registry_dir)) \
            if method in ("auto", "cnn") else None
        if not scan.files:
            fail(f"{root}: no labeled files to audit", as_json, code=1)
        _say(f"checking {len(scan.files)} files out of sample ({folds} folds)")
        summary = audit_scan(scan, method, folds, seed, model).summary(
            [f.file.rel for f in scan.files], limit=sys.maxsize)
    except (OSError, ValueError) as exc:
        fail(str(exc), as_json)
    files = write_report(folder, summary, root, settings.max_frames_per_file)
    emit({"ok": True, "labeled": str(root), "folder": str(folder), **summary, **files},
         as_json, _audit_human(summary, folder))


def _audit_human(s: dict[str, Any], folder: Path) -> str:
    lines = [f"{s['flagged']} of {s['files']} files look mislabeled ({s['method']}, "
             f"out-of-sample accuracy {s['oof_accuracy'].get(s['method'], 0):.2f}); "
             f"report: {folder}/audit.csv"]
    lines += [f"  {x['path']}: labeled {x['given']}, looks like {x['suggested']} "
              f"(quality {x['label_quality']:.2f})" for x in s["suspects"][:10]]
    if s["skipped_classes"]:
        lines.append(f"  not checked (fewer than 2 files): {', '.join(s['skipped_classes'])}")
    return "\n".join(lines)
