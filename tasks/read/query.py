"""Reading the predictions and rejections datasets: the one implementation of filtering.

The CLI (``posebatch query``, ``report``) and any Python user call ``read_predictions`` /
``read_rejections``. Every filter becomes a ``pyarrow.dataset`` expression, so it is pushed
into the Parquet scan: the ``date=YYYY-MM-DD`` partition filter prunes whole directories
before a file is opened, and row-group statistics skip the rest. Nothing is filtered in
Python after the scan.

Model versions: after ``posebatch rescore`` a frame may have one row per model version. By
default ``read_predictions`` returns one row per frame (``model_version="current"``: the
production version's row, else the latest); see ``read_predictions`` and ``pick_rows``. The
pick is skipped when the file footers prove a single version; otherwise it costs one narrow
scan of ``(content_sha256, frame_index)`` over the whole dataset (the pick is over every row
of a frame, whatever the time filters), and a second narrow one only if some frame repeats.

Time bounds: ``since`` is inclusive; ``until`` is inclusive too (a date means the whole day,
a datetime that instant). Naive datetimes are UTC, like the partitions.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
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

MODES = ("current", "production", "latest", "all")
FRAME_KEY = ("source_path", "content_sha256", "frame_index")
_IDENTITY = FRAME_KEY + ("model_version", "classified_at")
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


def _columns(dataset: ds.Dataset, columns: Sequence[str] | str | None,
             order_by: str | Sequence[str] | None,
             limit: int | None) -> tuple[list[str], list[tuple[str, str]]]:
    """The wanted columns and sort keys, checked against the dataset's schema."""
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
    return wanted, keys


PICK_HINT = ("move the damaged file aside; one row per frame reads every file's footer, "
             "--model-version all or a version reads only the --since/--until days")


def _read_error(name: str, exc: BaseException,
                hint: str = "move the damaged file aside, or narrow --since/--until to skip "
                            "it") -> QueryError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return QueryError(f"cannot read the {name} dataset: {first} ({hint})")


def _to_table(dataset: ds.Dataset, name: str, columns: Sequence[str],
              expr: ds.Expression | None, hint: str | None = None) -> pa.Table:
    try:
        return dataset.to_table(columns=list(columns), filter=expr)
    except (pa.ArrowException, OSError) as exc:
        raise (_read_error(name, exc, hint) if hint else _read_error(name, exc)) from None


def _finish(table: pa.Table, wanted: Sequence[str], keys: list[tuple[str, str]],
            limit: int | None) -> pa.Table:
    if keys:
        table = table.sort_by(keys)
    if limit is not None:
        table = table.slice(0, limit)
    return table.select(list(wanted))


def _scan(dataset: ds.Dataset, name: str, expr: ds.Expression | None,
          columns: Sequence[str] | None, limit: int | None,
          order_by: str | Sequence[str] | None) -> pa.Table:
    wanted, keys = _columns(dataset, columns, order_by, limit)
    read = wanted + [k for k, _ in keys if k not in wanted]
    if limit is not None and not keys:
        # head() stops once it has enough rows; reading one file ahead (not the default
        # four) keeps it from decoding files it will not need: 10x faster for --limit 200.
        try:
            return dataset.head(limit, columns=read, filter=expr, fragment_readahead=1)
        except (pa.ArrowException, OSError) as exc:
            raise _read_error(name, exc) from None
    return _finish(_to_table(dataset, name, read, expr), wanted, keys, limit)


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


def version_sort_key(version: str) -> tuple:
    """Natural order of version names: ``v0002 < v0010``, ``v9 < v10``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.findall(r"\d+|\D+", version))


def _fragment_versions(fragment: ds.Fragment) -> set[str] | None:
    """The model versions of one file from its row-group statistics (footer only), or None
    when the statistics do not prove them (missing, or a row group with min != max)."""
    found: set[str] = set()
    fragment.ensure_complete_metadata()
    for rg in fragment.row_groups:
        if rg.num_rows == 0:
            continue
        stats = (rg.statistics or {}).get("model_version") or {}
        lo, hi = stats.get("min"), stats.get("max")
        if lo is None or lo != hi:
            return None
        found.add(str(lo))
    return found


def dataset_versions(dataset: ds.Dataset, name: str = PREDICTIONS) -> list[str]:
    """The distinct ``model_version`` values of a predictions dataset, naturally sorted.

    Cheap: each file's footer statistics usually prove its versions (a classify run or a
    compaction writes one version per file), so no data page is read; a file whose
    statistics do not (several versions in one row group, no statistics) has its
    ``model_version`` column read (dictionary-encoded, a few KB).
    """
    found: set[str] = set()
    try:
        for fragment in dataset.get_fragments():
            got = _fragment_versions(fragment)
            if got is None:
                col = fragment.to_table(columns=["model_version"], schema=dataset.schema)
                got = {v for v in pc.unique(col.column(0)).to_pylist() if v is not None}
            found |= got
    except (pa.ArrowException, OSError) as exc:
        raise _read_error(name, exc, PICK_HINT) from None
    return sorted(found, key=version_sort_key)


def model_versions_in(output: Path | str) -> list[str]:
    """The model versions found in ``OUTPUT/predictions`` (``NoData`` when there is none)."""
    return dataset_versions(open_dataset(output, PREDICTIONS))


def check_mode(mode: str, production: str | None, known: Sequence[str] | None = None) -> str:
    """Validate a ``model_version`` mode; returns it. ``known`` (versions in the data) is
    only needed to check a specific version; ``None`` skips that check."""
    if not mode:
        raise QueryError(f"empty --model-version: use {', '.join(MODES)} or a version")
    if mode == "production" and production is None:
        raise QueryError("--model-version production: no production model is registered; "
                         "use current, latest, all or a version")
    if mode not in MODES and known is not None and mode not in known:
        close = difflib.get_close_matches(mode, list(known), n=1)
        did = f" (did you mean {close[0]!r}?)" if close else ""
        raise QueryError(f"unknown model version {mode!r}{did}: versions found in the "
                         f"predictions are {', '.join(known) or 'none'}; or use "
                         f"{', '.join(MODES)}")
    return mode


def pick_rows(table: pa.Table, production: str | None = None) -> pa.Array:
    """Indices (ascending) of the picked row of each frame of ``table``.

    A frame is ``FRAME_KEY``; its picked row is the ``production`` version's row if it has
    one, else the row with the latest ``classified_at``, ties going to the larger
    ``model_version`` (natural order). ``production=None`` gives "latest". ``table`` needs
    ``FRAME_KEY``, ``model_version`` and ``classified_at``.
    """
    n = table.num_rows
    if n == 0:
        return pa.array([], pa.int64())
    versions = table.column("model_version")
    names = sorted({v for v in pc.unique(versions).to_pylist() if v is not None},
                   key=version_sort_key)
    rank = pc.fill_null(pc.index_in(versions, pa.array(names, pa.string())), -1)
    prod = (pc.fill_null(pc.equal(versions, production), False) if production
            else pa.array(np.zeros(n, bool)))
    order = pc.sort_indices(pa.table({"p": prod, "t": table.column("classified_at"),
                                      "v": rank}),
                            sort_keys=[("p", "descending"), ("t", "descending"),
                                       ("v", "descending")])
    ranked = table.select(list(FRAME_KEY)).take(order).append_column(
        "_pos", pa.array(np.arange(n, dtype=np.int64)))
    first = ranked.group_by(list(FRAME_KEY)).aggregate([("_pos", "min")])
    picked = pc.take(order, first.column("_pos_min"))
    return pc.take(picked, pc.sort_indices(picked))


def pick_current(table: pa.Table, production: str | None = None) -> pa.Table:
    """One row per frame (see ``pick_rows``), in the table's order."""
    return table.take(pick_rows(table, production))


def _losers(dataset: ds.Dataset, pre: ds.Expression | None,
            production: str | None) -> pa.Table | None:
    """The rows (``_IDENTITY`` columns) that lose the per-frame pick, or ``None`` when no
    frame has more than one row (then there is nothing to drop).

    Two narrow scans: ``(content_sha256, frame_index)`` first (a frame with one row under
    that coarser key has one row under the full key); only when some key repeats, the full
    identity of the rows sharing a repeated hash, and the pick runs on those alone.
    """
    coarse = _to_table(dataset, PREDICTIONS, ["content_sha256", "frame_index"], pre,
                       PICK_HINT)
    counts = coarse.group_by(["content_sha256", "frame_index"]).aggregate(
        [("frame_index", "count")])
    repeated = counts.filter(pc.greater(counts.column("frame_index_count"), 1))
    if repeated.num_rows == 0:
        return None
    shas = pc.unique(repeated.column("content_sha256"))
    expr = ds.field("content_sha256").isin(shas)
    expr = expr if pre is None else pre & expr
    rows = _to_table(dataset, PREDICTIONS, list(_IDENTITY), expr, PICK_HINT)
    winners = rows.take(pick_rows(rows, production))
    losers = rows.join(winners, keys=list(_IDENTITY), join_type="left anti")
    return losers if losers.num_rows else None


def read_predictions(output: Path | str, *, since: When = None, until: When = None,
                     labels: Sequence[str] | None = None,
                     min_confidence: float | None = None,
                     max_confidence: float | None = None,
                     batches: Sequence[str] | None = None,
                     model_versions: Sequence[str] | None = None,
                     path: str | None = None,
                     columns: Sequence[str] | str | None = None,
                     limit: int | None = None,
                     order_by: str | Sequence[str] | None = None,
                     model_version: str = "current",
                     production: str | None = None) -> pa.Table:
    """Predictions under ``OUTPUT/predictions`` that match every given filter.

    ``model_version`` says which rows of a frame scored by several model versions (a frame
    is ``(source_path, content_sha256, frame_index)``) are returned:

    - ``"current"`` (default): one row per frame, the ``production`` version's row where the
      frame has one, else the latest (max ``classified_at``; a tie goes to the larger
      version);
    - ``"latest"``: one row per frame, the latest (``production`` ignored);
    - ``"production"``: only the ``production`` version's rows (``production`` required);
    - ``"all"``: every row;
    - any other value: only that version's rows (unknown version: ``QueryError`` listing
      the versions found).

    ``production`` is the registry's production version (the CLI passes
    ``Registry(...).production_version()``); this function reads no registry.
    ``model_versions`` narrows the rows *before* the pick (only those versions compete);
    the other filters apply to the picked rows, as SQL over the ``predictions`` view does.
    With a single model version in the data (proved from the file footers) nothing is
    picked and every filter stays inside the scan.

    ``labels``/``batches``/``model_versions`` match any of the values; ``path`` is a glob
    over ``source_path`` (fnmatch rules); ``columns`` may include the partition ``date``.
    Raises ``QueryError`` (``NoData`` for a missing/empty dataset) with a one-line message.
    """
    check_mode(model_version, production)
    expr = prediction_filter(since=since, until=until, labels=labels,
                             min_confidence=min_confidence, max_confidence=max_confidence,
                             batches=batches, path=path)
    pre = ds.field("model_version").isin(list(model_versions)) if model_versions else None
    dataset = open_dataset(output, PREDICTIONS)
    if model_version not in ("current", "latest"):
        only = production if model_version == "production" else model_version
        if only != "all":
            e = ds.field("model_version") == only
            pre = e if pre is None else pre & e
        table = _scan(dataset, PREDICTIONS, _and(pre, expr), columns, limit, order_by)
        if table.num_rows == 0 and only != "all":
            _check_version(dataset, model_version, only)
        return table
    pick_production = production if model_version == "current" else None
    if len(dataset_versions(dataset)) <= 1 or \
            (model_versions and len(set(model_versions)) == 1):
        return _scan(dataset, PREDICTIONS, _and(pre, expr), columns, limit, order_by)
    losers = _losers(dataset, pre, pick_production)
    if losers is None:
        return _scan(dataset, PREDICTIONS, _and(pre, expr), columns, limit, order_by)
    wanted, keys = _columns(dataset, columns, order_by, limit)
    read = list(dict.fromkeys(wanted + [k for k, _ in keys] + list(_IDENTITY)))
    table = _to_table(dataset, PREDICTIONS, read, _and(pre, expr))
    ident = table.select(list(_IDENTITY)).append_column(
        "_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    keep = ident.join(losers, keys=list(_IDENTITY), join_type="left anti").column("_row")
    table = table.take(pc.take(keep, pc.sort_indices(keep)))
    return _finish(table, wanted, keys, limit)


def _and(a: ds.Expression | None, b: ds.Expression | None) -> ds.Expression | None:
    return b if a is None else a if b is None else a & b


def _check_version(dataset: ds.Dataset, mode: str, version: str | None) -> None:
    """After an empty result for one version: say so if the version is not in the data."""
    known = dataset_versions(dataset)
    if version in known:
        return
    if mode == "production":
        raise QueryError(f"the production model {version} has no predictions: versions "
                         f"found are {', '.join(known) or 'none'}; use --model-version "
                         "current, latest or all")
    check_mode(mode, None, known)


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
