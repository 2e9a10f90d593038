"""Reading the predictions and rejections datasets: the one implementation of filtering.

The CLI (``posebatch query``, ``report``) and any Python user call ``read_predictions`` /
``read_rejections``. Every filter becomes a ``pyarrow.dataset`` expression, so it is pushed
into the Parquet scan: the ``date=YYYY-MM-DD`` partition filter prunes whole directories
before a file is opened, and row-group statistics skip the rest. Nothing is filtered in
Python after the scan.

Time bounds: ``since`` is inclusive; ``until`` is inclusive too (a date means the whole day,
a datetime that instant). Naive datetimes are UTC, like the partitions.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from models.spec import class_names
from tasks.io.schema import (
    PARTITION_COLUMN,
    PREDICTIONS,
    PREDICTIONS_SCHEMA,
    REJECTIONS,
    REJECTIONS_SCHEMA,
)
from tasks.io.storage import Location
from tasks.io.validate import REASONS

TIMESTAMP_COLUMN = {PREDICTIONS: "classified_at", REJECTIONS: "rejected_at"}
_SCHEMAS = {PREDICTIONS: PREDICTIONS_SCHEMA, REJECTIONS: REJECTIONS_SCHEMA}
_RELATIVE = re.compile(r"^(\d+)([dhm])$")
WHEN_HELP = ("use YYYY-MM-DD, an ISO datetime such as 2024-05-01T08:00 (UTC unless it has "
             "an offset), today, yesterday, or Nd/Nh/Nm for N days/hours/minutes ago")

When = str | date | datetime | None


class QueryError(ValueError):
    """A user error in a query (bad date, unknown column or label, no data): one line."""


class NoData(QueryError):
    """The dataset does not exist or holds no Parquet files."""


def dataset_schema(name: str) -> pa.Schema:
    """The file schema plus the hive partition column ``date`` (date32, as DuckDB, Polars and
    Spark read ``date=YYYY-MM-DD`` too)."""
    return _SCHEMAS[name].append(pa.field(PARTITION_COLUMN, pa.date32()))


def _is_partition(dirname: str) -> bool:
    key, _, value = dirname.partition("=")
    if key != PARTITION_COLUMN or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _location(output: Path | str) -> Location:
    try:
        return Location(output)
    except ValueError as exc:
        raise QueryError(str(exc)) from None


def list_parquet_files(root: Path | str, fs: pafs.FileSystem | None = None) -> list[str]:
    """Every ``*.parquet`` of the dataset at ``root`` (a path inside ``fs``, default local):
    in ``date=YYYY-MM-DD`` folders (other top-level folders are not part of the layout),
    skipping any name that starts with ``_`` or ``.`` (staging, ledgers, a writer's temporary
    files). Lists; opens nothing."""
    fs = fs or pafs.LocalFileSystem()
    root = str(root).rstrip("/")
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    found = []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        parts = info.path[len(root) + 1:].split("/")
        if any(p.startswith(("_", ".")) for p in parts):
            continue
        if len(parts) > 1 and not _is_partition(parts[0]):
            continue
        found.append(info.path)
    return sorted(found)


def open_dataset(output: Path | str, name: str) -> ds.Dataset:
    """The hive-partitioned dataset ``OUTPUT/<name>`` (a folder or ``s3://bucket/prefix``);
    raises ``NoData`` when there is none.

    The schema is given, not inferred, so discovery opens no file: only the fragments that
    survive partition pruning are ever read. Files missing a column read it as null.
    """
    loc = _location(output)
    if not loc.exists():
        raise NoData(f"output directory {loc.uri_of()} does not exist: pass --output DIR (the "
                     "folder `posebatch classify` writes to) or run `posebatch classify` first")
    files = list_parquet_files(loc.path(name), loc.fs)
    if not files:
        raise NoData(f"no {name} under {loc.uri_of(name)}: run `posebatch classify` first, "
                     "or pass the right --output DIR")
    partitioning = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.date32())]),
                                   flavor="hive")
    return ds.dataset(files, schema=dataset_schema(name), format="parquet", filesystem=loc.fs,
                      partitioning=partitioning, partition_base_dir=loc.path(name))


def parse_when(value: When, now: datetime | None = None) -> tuple[datetime, bool]:
    """``(instant in UTC, is_whole_day)`` for a ``--since``/``--until`` value."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return dt.astimezone(UTC), False
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC), True
    text = str(value).strip().lower()
    now = now or datetime.now(UTC)
    if text in ("today", "yesterday"):
        day = now.date() - timedelta(days=1 if text == "yesterday" else 0)
        return datetime.combine(day, time(), UTC), True
    rel = _RELATIVE.match(text)
    if rel:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[rel.group(2)]
        return now - timedelta(**{unit: int(rel.group(1))}), False
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return datetime.combine(date.fromisoformat(text), time(), UTC), True
        except ValueError:
            pass
    else:
        try:
            return parse_when(datetime.fromisoformat(str(value).strip()))
        except ValueError:
            pass
    raise QueryError(f"malformed date {value!r}: {WHEN_HELP}")


def glob_to_regex(pattern: str) -> str:
    """An anchored RE2 regex with ``fnmatch`` semantics (``*`` also crosses ``/``).

    Written out here because ``fnmatch.translate`` emits Python-only syntax (``\\Z``) that
    Arrow's RE2 engine rejects; a regex lets the path filter stay inside the scan.
    """
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
                continue
            body = pattern[i:j].replace("\\", "\\\\")
            i = j + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            out.append(f"[{body}]")
        else:
            out.append(re.escape(c))
    out.append("$")
    return "".join(out)


def parse_order_by(spec: str | Sequence[str] | None) -> list[tuple[str, str]]:
    """``"confidence"``, ``"-confidence"``, ``"confidence:desc"``, comma-separated or a list."""
    if not spec:
        return []
    items = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in s.split(",")]
    keys = []
    for item in (s.strip() for s in items if s.strip()):
        order = "ascending"
        if item.startswith("-"):
            item, order = item[1:], "descending"
        elif ":" in item:
            item, _, direction = item.partition(":")
            if direction.lower() not in ("asc", "desc"):
                raise QueryError(f"bad order {direction!r} in --order-by: use COLUMN, -COLUMN, "
                                 "COLUMN:asc or COLUMN:desc")
            order = "descending" if direction.lower() == "desc" else "ascending"
        keys.append((item, order))
    return keys


def _check_names(kind: str, given: Iterable[str], known: Sequence[str], hint: str) -> None:
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            did = f" (did you mean {close[0]!r}?)" if close else ""
            raise QueryError(f"unknown {kind} {name!r}{did}; {hint}: {', '.join(known)}")


def _time_filter(name: str, since: When, until: When) -> ds.Expression | None:
    ts = ds.field(TIMESTAMP_COLUMN[name])
    part = ds.field(PARTITION_COLUMN)
    expr = None

    def conj(e: ds.Expression) -> None:
        nonlocal expr
        expr = e if expr is None else expr & e

    if since is not None:
        lo, _ = parse_when(since)
        conj(part >= lo.date())
        conj(ts >= pa.scalar(lo, pa.timestamp("us", tz="UTC")))
    if until is not None:
        hi, whole_day = parse_when(until)
        conj(part <= hi.date())
        if whole_day:
            conj(ts < pa.scalar(hi + timedelta(days=1), pa.timestamp("us", tz="UTC")))
        else:
            conj(ts <= pa.scalar(hi, pa.timestamp("us", tz="UTC")))
    return expr


def _scan(dataset: ds.Dataset, name: str, expr: ds.Expression | None,
          columns: Sequence[str] | None, limit: int | None,
          order_by: str | Sequence[str] | None) -> pa.Table:
    known = dataset.schema.names
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    wanted = list(columns) if columns else list(known)
    _check_names("column", wanted, known, "columns are")
    keys = parse_order_by(order_by)
    _check_names("column", [k for k, _ in keys], known, "columns are")
    for key, _ in keys:
        if pa.types.is_list(dataset.schema.field(key).type):
            raise QueryError(f"cannot order by {key!r}: it holds lists")
    if limit is not None and limit < 0:
        raise QueryError("--limit must be 0 or more")
    read = wanted + [k for k, _ in keys if k not in wanted]
    try:
        if limit is not None and not keys:
            # head() stops once it has enough rows; reading one file ahead (not the default
            # four) keeps it from decoding files it will not need: 10x faster for --limit 200.
            return dataset.head(limit, columns=read, filter=expr, fragment_readahead=1)
        table = dataset.to_table(columns=read, filter=expr)
    except (pa.ArrowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise QueryError(f"cannot read the {name} dataset: {first} (move the damaged file "
                         "aside, or narrow --since/--until to skip it)") from None
    if keys:
        table = table.sort_by(keys)
        if limit is not None:
            table = table.slice(0, limit)
    return table.select(wanted)


def prediction_filter(*, since: When = None, until: When = None,
                      labels: Sequence[str] | None = None,
                      min_confidence: float | None = None,
                      max_confidence: float | None = None,
                      batches: Sequence[str] | None = None,
                      model_versions: Sequence[str] | None = None,
                      path: str | None = None) -> ds.Expression | None:
    """The dataset expression for the prediction filters (``None``: no filter)."""
    parts = []
    tf = _time_filter(PREDICTIONS, since, until)
    if tf is not None:
        parts.append(tf)
    if labels:
        _check_names("label", labels, class_names(), "labels are")
        parts.append(ds.field("label").isin(list(labels)))
    if min_confidence is not None:
        parts.append(ds.field("confidence") >= float(min_confidence))
    if max_confidence is not None:
        parts.append(ds.field("confidence") <= float(max_confidence))
    if batches:
        parts.append(ds.field("batch").isin(list(batches)))
    if model_versions:
        parts.append(ds.field("model_version").isin(list(model_versions)))
    if path:
        parts.append(pc.match_substring_regex(ds.field("source_path"), glob_to_regex(path)))
    expr = None
    for p in parts:
        expr = p if expr is None else expr & p
    return expr


def read_predictions(output: Path | str, *, since: When = None, until: When = None,
                     labels: Sequence[str] | None = None,
                     min_confidence: float | None = None,
                     max_confidence: float | None = None,
                     batches: Sequence[str] | None = None,
                     model_versions: Sequence[str] | None = None,
                     path: str | None = None,
                     columns: Sequence[str] | str | None = None,
                     limit: int | None = None,
                     order_by: str | Sequence[str] | None = None) -> pa.Table:
    """Predictions under ``OUTPUT/predictions`` that match every given filter.

    ``labels``/``batches``/``model_versions`` match any of the values; ``path`` is a glob
    over ``source_path`` (fnmatch rules); ``columns`` may include the partition ``date``.
    Raises ``QueryError`` (``NoData`` for a missing/empty dataset) with a one-line message.
    """
    expr = prediction_filter(since=since, until=until, labels=labels,
                             min_confidence=min_confidence, max_confidence=max_confidence,
                             batches=batches, model_versions=model_versions, path=path)
    return _scan(open_dataset(output, PREDICTIONS), PREDICTIONS, expr, columns, limit,
                 order_by)


def read_rejections(output: Path | str, *, since: When = None, until: When = None,
                    reasons: Sequence[str] | None = None, path: str | None = None,
                    columns: Sequence[str] | str | None = None, limit: int | None = None,
                    order_by: str | Sequence[str] | None = None) -> pa.Table:
    """Rejected files under ``OUTPUT/rejections``; ``reasons`` are codes of ``REASONS``."""
    expr = _time_filter(REJECTIONS, since, until)
    if reasons:
        _check_names("reason", reasons, sorted(REASONS), "reasons are")
        e = ds.field("reason").isin(list(reasons))
        expr = e if expr is None else expr & e
    if path:
        e = pc.match_substring_regex(ds.field("source_path"), glob_to_regex(path))
        expr = e if expr is None else expr & e
    return _scan(open_dataset(output, REJECTIONS), REJECTIONS, expr, columns, limit, order_by)


def empty_table(name: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A typed empty table of a dataset (for reports over a dataset that does not exist)."""
    table = dataset_schema(name).empty_table()
    return table.select(list(columns)) if columns else table
