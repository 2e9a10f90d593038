"""Commands: query, sql, report, show: reading the results the morning after.

All filtering goes through ``tasks.read.query`` (``read_predictions``/``read_rejections``); this
module only parses flags and prints. Heavy imports (pyarrow, DuckDB, matplotlib, Keras) happen
inside the commands so ``posebatch --help`` stays instant.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.common import (
    DataOpt,
    JsonOpt,
    emit,
    fail,
    local_path,
    location,
    registry_location,
    setup,
)

TABLE_ROWS = 200  # the aligned table shows at most this many rows (pipes should use --format)
TABLE_COLUMNS = ["date", "source_path", "frame_index", "label", "confidence", "top2_label",
                 "top2_confidence", "model_version", "classified_at"]
REJECTION_TABLE_COLUMNS = ["date", "source_path", "reason", "detail", "rejected_at"]

OutputOpt = Annotated[str | None, typer.Option(
    "--output", help="Output folder of `posebatch classify`, or s3://bucket/prefix "
    "(default: DATA/output).", show_default=False, parser=location)]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="From this UTC date/datetime, inclusive: 2024-05-01, 2024-05-01T08:00, "
    "today, yesterday, 12h, 7d.")]
UntilOpt = Annotated[str | None, typer.Option(
    "--until", help="Up to this date (whole day) or datetime, inclusive.")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", help="table, csv, json (JSON Lines) or parquet; default: from the --to "
    "suffix, else table.")]
ToOpt = Annotated[Path | None, typer.Option("--to", help="Write to this file, not stdout.",
    parser=local_path)]
ModelVersionOpt = Annotated[list[str] | None, typer.Option(
    "--model-version", help="Which rows of frames scored by several model versions: "
    "current (default: one row per frame, the production model's row, else the latest), "
    "latest (one row per frame, the latest classified_at), production (only the "
    "production model's rows), all (every row), or a version such as v0002 (only its rows; "
    "repeat for several versions).", show_default=False)]
RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", help="Model registry whose production alias --model-version "
    "current/production use (default: DATA/registry).", show_default=False,
    parser=registry_location)]
LowOpt = Annotated[float | None, typer.Option(
    "--low-confidence", help="Low-confidence threshold (default: settings.low_confidence).")]


def _write(table: Any, fmt: str | None, to: Path | None, as_json: bool,
           extra: dict[str, Any]) -> None:
    """Print or save a result; with ``--json`` the rows (or the path) go in the JSON object."""
    from tasks.read.table_output import FORMATS, format_for, records, write_result

    fmt = format_for(to, fmt)
    if fmt not in FORMATS:
        fail(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}", as_json)
    result = {"ok": True, "rows": table.num_rows, **extra}
    if to is not None:
        to.parent.mkdir(parents=True, exist_ok=True)
        with open(to, "wb") as fh:
            write_result(table, fmt, fh)
        result.update(path=str(to), format=fmt)
        emit(result, as_json, f"wrote {table.num_rows} rows to {to} ({fmt})")
        return
    if as_json:
        result.update(columns=table.column_names, records=records(table))
        emit(result, True)
        return
    if fmt == "parquet" and sys.stdout.isatty():
        fail("refusing to write binary Parquet to a terminal: add --to FILE or pipe it", False)
    shown = table
    if fmt == "table" and table.num_rows > TABLE_ROWS:
        shown = table.slice(0, TABLE_ROWS)
        typer.echo(f"showing the first {TABLE_ROWS} rows: narrow the filters, add --limit, "
                   "or use --format csv / --to FILE for all of them", err=True)
    sys.stdout.flush()
    write_result(shown, fmt, sys.stdout.buffer)
    sys.stdout.buffer.flush()


def production_version(registry_dir: Path) -> str | None:
    """The registry's production version, or None (no registry, no alias, unreadable)."""
    from models.registry import Registry

    try:
        return Registry(registry_dir).production_version()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def version_mode(values: list[str] | None, as_json: bool) -> tuple[str, list[str] | None]:
    """``--model-version`` values as ``(mode, model_versions)``: none is ``current``; one
    value is a mode or a version; several are versions (every row of each)."""
    from tasks.read.query import MODES

    if not values:
        return "current", None
    if len(values) == 1:
        return values[0], None
    modes = [v for v in values if v in MODES]
    if modes:
        fail(f"--model-version {modes[0]} cannot be combined with other --model-version "
             "values: repeat it only with version names", as_json)
    return "all", list(dict.fromkeys(values))


def query(
    data: DataOpt = None,
    output: OutputOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", help="Only this predicted label (repeatable).")] = None,
    min_confidence: Annotated[float | None, typer.Option(
        "--min-confidence", help="Confidence >= this.")] = None,
    max_confidence: Annotated[float | None, typer.Option(
        "--max-confidence", help="Confidence <= this.")] = None,
    batch: Annotated[list[str] | None, typer.Option(
        "--batch", help="Only this input batch folder (repeatable).")] = None,
    model_version: ModelVersionOpt = None,
    path: Annotated[str | None, typer.Option(
        "--path", help="Glob over source_path, e.g. 'batch_007/*' ('*' crosses '/').")] = None,
    rejections: Annotated[bool, typer.Option(
        "--rejections", help="Query the rejected files instead of the predictions.")] = False,
    reason: Annotated[list[str] | None, typer.Option(
        "--reason", help="With --rejections: only this reason code (repeatable).")] = None,
    columns: Annotated[str | None, typer.Option(
        "--columns", help="Comma-separated columns (the partition 'date' included).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most N rows.")] = None,
    order_by: Annotated[str | None, typer.Option(
        "--order-by", help="Sort: COLUMN, -COLUMN (descending), comma-separated.")] = None,
    fmt: FormatOpt = None,
    to: ToOpt = None,
    summary: Annotated[bool, typer.Option(
        "--summary", help="Frames, mean confidence and low-confidence share per day and "
        "label.")] = False,
    low_confidence: LowOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Filter the predictions (or rejections) and print them or save them to a file.

    A frame re-scored by several model versions is one row by default (the production
    model's row, else the latest; --model-version all: every row). The table shows at most
    200 rows; --format csv|json|parquet and --to give all (--json: rows in the object).
    """
    from tasks.read.query import QueryError

    settings = setup(data)
    output = output or str(settings.output_dir)
    filters = _filters(model_version, registry or settings.registry_dir, rejections, as_json,
                       since=since, until=until, labels=label, batches=batch, path=path,
                       min_confidence=min_confidence, max_confidence=max_confidence)
    try:
        if rejections:
            _query_rejections(output, _misplaced(filters, summary), since, until, reason, path,
                              columns, limit, order_by, fmt, to, as_json)
        elif reason:
            fail("--reason filters rejections: add --rejections", as_json)
        elif summary:
            threshold = settings.low_confidence if low_confidence is None else low_confidence
            _query_summary(output, filters, threshold, order_by, limit, fmt, to, as_json)
        else:
            _query_predictions(output, filters, columns, limit, order_by, fmt, to, as_json)
    except QueryError as exc:
        fail(str(exc), as_json)


def _filters(model_version: list[str] | None, registry: Path, rejections: bool, as_json: bool,
             **given: Any) -> dict[str, Any]:
    """``read_predictions``' filters: the given ones plus the version mode, the versions
    named and the production version (read from the registry only when the mode needs it)."""
    mode, versions = version_mode(model_version, as_json)
    needs = not rejections and mode in ("current", "production")
    return {**given, "model_versions": versions, "model_version": mode,
            "production": production_version(registry) if needs else None}


def _misplaced(filters: dict[str, Any], summary: bool) -> list[str]:
    """The given prediction-only flags, named as typed, for the --rejections error."""
    return [name for name, v in (("--label", filters["labels"]),
                                 ("--batch", filters["batches"]),
                                 ("--model-version", filters["model_versions"] or
                                  filters["model_version"] != "current"),
                                 ("--min-confidence", filters["min_confidence"]),
                                 ("--max-confidence", filters["max_confidence"]),
                                 ("--summary", summary or None)) if v]


def _query_predictions(output: str, filters: dict[str, Any], columns: str | None,
                       limit: int | None, order_by: str | None, fmt: str | None,
                       to: Path | None, as_json: bool) -> None:
    """Plain ``query``: the aligned table reads only its columns and one row past its cap."""
    from tasks.read.query import read_predictions

    table_fmt = _is_table(fmt, to)
    cols = columns or (TABLE_COLUMNS if table_fmt and not as_json else None)
    table = read_predictions(output, **filters, columns=cols,
                             limit=_limit(limit, table_fmt, as_json, to), order_by=order_by)
    _write(table, fmt, to, as_json, {"dataset": "predictions",
                                     "model_version": filters["model_version"]})


def _query_rejections(output: str, misplaced: list[str], since: str | None,
                      until: str | None, reason: list[str] | None, path: str | None,
                      columns: str | None, limit: int | None, order_by: str | None,
                      fmt: str | None, to: Path | None, as_json: bool) -> None:
    """``query --rejections``: prediction-only filters are an error, not silently ignored."""
    from tasks.read.query import read_rejections

    if misplaced:
        fail(f"{', '.join(misplaced)} do not apply to --rejections (they filter "
             "predictions); use --reason, --since/--until, --path", as_json)
    table_fmt = _is_table(fmt, to)
    cols = columns or (REJECTION_TABLE_COLUMNS if table_fmt and not as_json else None)
    table = read_rejections(output, since=since, until=until, reasons=reason, path=path,
                            columns=cols, limit=_limit(limit, table_fmt, as_json, to),
                            order_by=order_by)
    _write(table, fmt, to, as_json, {"dataset": "rejections"})


def _query_summary(output: str, filters: dict[str, Any], threshold: float,
                   order_by: str | None, limit: int | None, fmt: str | None, to: Path | None,
                   as_json: bool) -> None:
    """``query --summary``: --order-by/--limit apply to the summary rows, whose columns
    differ from the predictions', so an unknown column is reported against them."""
    from tasks.read.query import read_predictions
    from tasks.read.summary import summarize

    table = read_predictions(output, **filters, columns=["date", "label", "confidence"])
    result = summarize(table, threshold)
    if order_by or limit is not None:
        from tasks.read.query import parse_order_by
        keys = parse_order_by(order_by)
        bad = [k for k, _ in keys if k not in result.column_names]
        if bad:
            fail(f"unknown column {bad[0]!r} for --summary: columns are "
                 f"{', '.join(result.column_names)}", as_json)
        result = result.sort_by(keys) if keys else result
        result = result.slice(0, limit) if limit is not None else result
    _write(result, fmt, to, as_json, {"dataset": "predictions", "summary": True,
                                      "model_version": filters["model_version"],
                                      "low_confidence": threshold,
                                      "frames": table.num_rows})


def _is_table(fmt: str | None, to: Path | None) -> bool:
    """Whether the output is the aligned table (the default when printing, not with --to)."""
    return (fmt or ("table" if to is None else None)) == "table"


def _limit(limit: int | None, table_fmt: bool, as_json: bool, to: Path | None) -> int | None:
    """The aligned table needs one row more than it shows to know it is cut."""
    if limit is None and table_fmt and not as_json and to is None:
        return TABLE_ROWS + 1
    return limit


def sql(
    statement: Annotated[str, typer.Argument(
        help="SQL over the views `predictions` (one row per frame by default, see "
        "--model-version), `predictions_all` (every row) and `rejections`, e.g. "
        "\"SELECT label, count(*) FROM predictions WHERE date >= '2024-05-01' GROUP BY 1\".")],
    data: DataOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = None,
    to: ToOpt = None,
    model_version: Annotated[str, typer.Option(
        "--model-version", help="What the `predictions` view holds: current (one row per "
        "frame: the production model's row, else the latest), latest, production, all, or "
        "one version's rows (e.g. v0002). `predictions_all` always holds every row.")
    ] = "current",
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run SQL (DuckDB) over the predictions and rejections, hive partitions included.

    `date` is a DATE column, so filtering on it prunes partitions. A dataset that does not
    exist yet is an empty view. The `predictions` view's definition is in the README
    ("Model versions"). Read-only and confined to these views: only SELECT/EXPLAIN run, no
    other file is read and nothing is written (COPY, ATTACH, INSTALL/LOAD, SET ... are
    refused); --to FILE saves the result.
    """
    from tasks.read.query import QueryError
    from tasks.read.sql import run_sql

    settings = setup(data)
    prod = production_version(registry or settings.registry_dir) \
        if model_version in ("current", "production") else None
    try:
        table = run_sql(output or str(settings.output_dir), statement, model_version, prod)
    except QueryError as exc:
        fail(str(exc), as_json)
    _write(table, fmt, to, as_json, {"dataset": "sql"})


def report(
    data: DataOpt = None,
    output: OutputOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    to: Annotated[Path | None, typer.Option(
        "--to", help="HTML file to write (default: DATA/reports/report-YYYY-MM-DD.html).",
        show_default=False, parser=local_path)] = None,
    registry: Annotated[str | None, typer.Option(
        "--registry", help="Model registry for the training class mix and the production "
        "version (default: DATA/registry).", show_default=False, parser=registry_location)] = None,
    low_confidence: LowOpt = None,
    title: Annotated[str, typer.Option("--title", help="Report title.")] = "posebatch report",
    model_version: Annotated[str, typer.Option(
        "--model-version", help="Which rows are counted: current (default: one row per "
        "frame, the production model's row, else the latest), latest, production, all, or "
        "one version (e.g. v0002).")] = "current",
    as_json: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report: frames per day and label, confidence per label,
    low-confidence share over time, rejections by reason, class-mix drift vs training, and,
    when the predictions hold several model versions, how the production version differs
    from the one before it (agreement, label flips, confidence shift)."""
    from tasks.read.report import build_report, training_distribution

    settings = setup(data)
    output = output or str(settings.output_dir)
    threshold = settings.low_confidence if low_confidence is None else low_confidence
    to = to or settings.data_root / "reports" / f"report-{datetime.now(UTC):%Y-%m-%d}.html"
    prod = production_version(registry or settings.registry_dir)
    typer.echo(f"reading {output} ...", err=True)
    pred, rej, missing, diff = _report_inputs(output, since, until, model_version, prod,
                                              as_json)
    training, note = training_distribution(registry or settings.registry_dir)
    scope = f"Output {output}; " + (f"from {since} " if since else "from the start ") + \
        (f"until {until}." if until else "until now.")
    typer.echo(f"plotting {pred.num_rows} predictions, {rej.num_rows} rejections ...",
               err=True)
    runs = _monitor_history(output)
    page = build_report(pred, rej, low_confidence=threshold, training=training,
                        model_note=note, title=title, scope=scope, monitoring=runs,
                        thresholds={"psi": settings.monitor_psi_threshold,
                                    "min_est_accuracy": settings.monitor_min_est_accuracy},
                        diff=diff)
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_text(page, encoding="utf-8")
    emit({"ok": True, "path": str(to), "frames": pred.num_rows, "rejections": rej.num_rows,
           "training_distribution": training is not None, "missing": missing,
           "monitored_runs": runs.num_rows if runs is not None else 0,
           "model_version": model_version,
           "diff": None if diff is None else {k: diff[k] for k in (
               "from_version", "to_version", "frames", "agreement", "flipped")},
           "bytes": len(page.encode())}, as_json, f"wrote {to}")


def _report_inputs(output: str, since: str | None, until: str | None, model_version: str,
                   prod: str | None, as_json: bool) -> tuple[Any, Any, list[str], Any]:
    """(predictions, rejections, the datasets missing, the versions' diff) for the report;
    one missing dataset is an empty table, both missing a one-line error."""
    from tasks.io.schema import PREDICTIONS, REJECTIONS
    from tasks.read.query import NoData, QueryError, empty_table, read_predictions, read_rejections
    from tasks.read.report import REPORT_COLUMNS

    missing = []
    diff = None
    try:
        try:
            pred = read_predictions(output, since=since, until=until, columns=REPORT_COLUMNS,
                                    model_version=model_version, production=prod)
            diff = _report_diff(output, prod, since, until)
        except NoData:
            missing.append(PREDICTIONS)
            pred = empty_table(PREDICTIONS, REPORT_COLUMNS)
        try:
            rej = read_rejections(output, since=since, until=until, columns=["reason"])
        except NoData as exc:
            if missing:
                fail(str(exc) if "does not exist" in str(exc) else
                     f"no predictions or rejections under {output}: run `posebatch classify` "
                     "first, or pass the right --output DIR", as_json)
            missing.append(REJECTIONS)
            rej = empty_table(REJECTIONS, ["reason"])
    except QueryError as exc:
        fail(str(exc), as_json)
    return pred, rej, missing, diff


def _monitor_history(output: str) -> Any:
    """The run history with realized accuracy (``posebatch monitor``'s table), or None
    when it cannot be read: the rest of the report does not depend on it."""
    from tasks.monitor.feedback import read_feedback, with_realized
    from tasks.monitor.trend import read_runs

    try:
        return with_realized(read_runs(str(output)), read_feedback(str(output)))
    except Exception as exc:  # noqa: BLE001 - reported, the report goes on without it
        typer.echo(f"monitoring history unreadable, section left out: {exc}", err=True)
        return None


def _report_diff(output: str, production: str | None, since: str | None,
                 until: str | None) -> dict[str, Any] | None:
    """The report's "Model versions" section data: production vs the version before it
    (the two newest without production); None with one version or no common frame."""
    from tasks.read.diff import compare, default_pair, read_pair
    from tasks.read.query import QueryError, model_versions_in

    versions = model_versions_in(output)
    if len(versions) < 2:
        return None
    try:
        pair = default_pair(versions, production)
        old, new = read_pair(output, *pair, since=since, until=until)
        return compare(old, new)
    except QueryError:
        return None


def show(
    file: Annotated[Path, typer.Argument(help="A heatmap .npy file.", parser=local_path)],
    frame: Annotated[int, typer.Option("--frame", help="Frame index in the file.")] = 0,
    to: Annotated[Path | None, typer.Option(
        "--to", help="PNG to write (default: ./<file stem>_f<K>.png).",
        show_default=False, parser=local_path)] = None,
    registry: Annotated[str | None, typer.Option(
        "--registry", help="Model registry (default: DATA/registry).",
        show_default=False, parser=registry_location)] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Model version to predict with (default: production).")] = None,
    no_model: Annotated[bool, typer.Option(
        "--no-model", help="Draw the heatmap only, no prediction.")] = False,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Render one heatmap frame as a PNG: channel max, decoded skeleton, and the registered
    model's top-3 prediction."""
    from tasks.io.validate import Rejected, read_heatmap_file
    from tasks.read.viewer import render_frame

    settings = setup(data)
    if not file.is_file():
        fail(f"{file} is not a file: give the path of a heatmap .npy", as_json)
    try:
        heat = read_heatmap_file(file, max_frames=settings.max_frames_per_file)
    except Rejected as exc:
        fail(f"{file} is not a valid heatmap file ({exc.reason}: {exc.detail})", as_json)
    n = heat.frames.shape[0]
    if not 0 <= frame < n:
        fail(f"--frame {frame} is out of range: {file} holds {n} frame(s) (0..{n - 1})",
             as_json)
    prediction, note, version = None, "no model prediction (--no-model)", None
    if not no_model:
        prediction, note, version = _predict(heat.frames[frame], registry or
                                             settings.registry_dir, model, as_json)
    to = to or Path(f"{file.stem}_f{frame}.png")
    title = f"{file.name}  frame {frame}/{n}"
    warnings = heat.warnings[frame]
    if warnings:
        title += f"  [{', '.join(warnings)}]"
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_bytes(render_frame(heat.frames[frame], title=title, prediction=prediction,
                                note=note))
    human = f"wrote {to}"
    if prediction:
        human += "; " + ", ".join(f"{name} {p:.1%}" for name, p in prediction)
    emit({"ok": True, "path": str(to), "frame": frame, "frames": n, "warnings": warnings,
           "model_version": version,
           "prediction": [{"label": name, "probability": p} for name, p in prediction or []]},
          as_json, human)


def _predict(frame: Any, registry_root: Path, version: str | None,
             as_json: bool) -> tuple[list[tuple[str, float]] | None, str, str | None]:
    """Top-3 of the registered model, or ``(None, why not, None)`` when there is no model."""
    from models.registry import Registry, RegistryError, load_model
    from tasks.read.viewer import softmax_top_k

    try:
        entry = Registry(registry_root).resolve(version)
    except RegistryError as exc:
        if version:  # asked for a version that is not there: that is an error
            fail(str(exc), as_json)
        return None, "no production model registered: no prediction", None
    typer.echo(f"loading model {entry.version} ...", err=True)
    model = load_model(entry)
    logits = model(frame[None], training=False)
    logits = logits.numpy() if hasattr(logits, "numpy") else logits
    top = softmax_top_k(logits[0], entry.class_names, entry.temperature)
    alias = " (production)" if version is None else ""
    return top, f"model {entry.version}{alias}, T={entry.temperature:.2f}: top 3", entry.version


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("query")(query)
    app.command("sql")(sql)
    app.command("report")(report)
    app.command("show")(show)
