"""SQL over the output datasets with DuckDB, for everything the query flags do not cover.

``predictions_all`` and ``rejections`` are views over the very ``pyarrow.dataset`` objects
``read_predictions`` scans (same files, same schema, staging and dot files skipped): DuckDB
pushes its filters and projections into that scan, so ``WHERE date >= '2024-05-01'`` prunes
partitions without opening older files, and ``date`` is a DATE column. Going through Arrow
rather than DuckDB's own Parquet reader also means no file is opened just to learn the schema.
A dataset that does not exist yet is an empty view with the right columns, so a query over
the other one still works.

``predictions`` is the version-aware view (``model_version`` mode, default ``current``: one
row per frame, the production version's row, else the latest); ``current_view_sql`` gives
its plain-SQL text, the one the README documents. When the data holds a single model version
(proved from the file footers) it is ``SELECT * FROM predictions_all``, so filters still
prune partitions.

**Confinement.** The connection reads the output's datasets and nothing else, and writes
nothing: the views scan Arrow datasets that posebatch opens itself (local or ``s3://``,
through pyarrow's filesystems), so DuckDB never needs to open a file. It is therefore born
with ``enable_external_access = false`` and *no* ``allowed_directories``/``allowed_paths``
(an allowed output root would also expose the ledger and lock under ``_posebatch/``, and an
``s3://`` root would need httpfs and credentials inside DuckDB), extension autoloading off,
and ``lock_configuration = true`` so no statement can switch any of it back. That is the
guarantee, for ``connect`` and ``run_sql`` alike. ``run_sql`` also accepts only reading
statements (``SELECT``, ``EXPLAIN``), so a ``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``,
``SET``, ``CREATE`` ... is refused by name in one line before DuckDB runs anything. DuckDB may
spill a large sort to a private temporary folder (not its default ``.tmp`` in the working
folder), removed with the connection.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks.io.schema import PREDICTIONS, REJECTIONS
from tasks.read.query import (
    MODES,
    NoData,
    QueryError,
    check_mode,
    dataset_versions,
    empty_table,
    open_dataset,
)

VIEWS = (PREDICTIONS, REJECTIONS)
ALL_VIEW = "predictions_all"
READING = ("SELECT", "EXPLAIN")  # statement types run_sql runs (SUMMARIZE/DESCRIBE are SELECT)
CONFINED = {  # set when the connection is made; lock_configuration keeps them
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "lock_configuration": True,
}
VIEW_NAMES = "the views predictions, predictions_all and rejections"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def current_view_sql(production: str | None, source: str = ALL_VIEW) -> str:
    """The portable SQL (DuckDB, Spark, Postgres, SQLite >= 3.25) of the ``current`` view:
    per ``(source_path, content_sha256, frame_index)``, the production version's row, else
    the latest ``classified_at`` (a tie goes to the larger ``model_version``).
    ``production=None`` gives ``latest``.

    (A tie between versions with different digit counts, ``v9``/``v10``, is broken by
    string order here and natural order in Python; registry versions are zero-padded.)
    """
    prefer = (f"CASE WHEN model_version = {_literal(production)} THEN 0 ELSE 1 END, "
              if production else "")
    return ("SELECT * FROM (\n"
            "  SELECT *, row_number() OVER (\n"
            "    PARTITION BY source_path, content_sha256, frame_index\n"
            f"    ORDER BY {prefer}classified_at DESC, model_version DESC) AS _pick\n"
            f"  FROM {source}) AS ranked\n"
            "WHERE _pick = 1")


def view_sql(mode: str, production: str | None, versions: list[str]) -> str:
    """The ``predictions`` view for a ``model_version`` mode, over ``predictions_all``."""
    check_mode(mode, production, versions if mode not in MODES else None)
    if mode == "all" or (mode in ("current", "latest") and len(versions) <= 1):
        return f"SELECT * FROM {ALL_VIEW}"
    if mode in ("current", "latest"):
        inner = current_view_sql(production if mode == "current" else None)
        return f"SELECT * EXCLUDE (_pick) FROM ({inner})"
    only = production if mode == "production" else mode
    return f"SELECT * FROM {ALL_VIEW} WHERE model_version = {_literal(only)}"


def connect(output: Path | str, model_version: str = "current",
            production: str | None = None) -> tuple[Any, list[str]]:
    """A DuckDB connection with the views defined; also the names of the empty datasets.

    Views: ``predictions`` (the ``model_version`` mode, default ``current``),
    ``predictions_all`` (every row) and ``rejections``. Raises ``NoData`` when neither
    dataset has a file, ``QueryError`` for a bad mode or a version not in the data.
    """
    import duckdb

    check_mode(model_version, production)
    spill = tempfile.mkdtemp(prefix="posebatch-sql-")
    con = duckdb.connect(config={**CONFINED, "temp_directory": spill})
    weakref.finalize(con, shutil.rmtree, spill, True)  # nothing left in the working folder
    empty = []
    versions: list[str] = []
    try:
        for name in VIEWS:
            try:
                dataset = open_dataset(output, name)
                if name == PREDICTIONS and model_version != "all":
                    versions = dataset_versions(dataset)
            except NoData as exc:
                if "does not exist" in str(exc):
                    raise
                empty.append(name)
                dataset = empty_table(name)
            con.register(f"_{name}_arrow", dataset)
            view = ALL_VIEW if name == PREDICTIONS else name
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM _{name}_arrow")
        if len(empty) == len(VIEWS):
            raise NoData(f"no predictions or rejections under {output}: run `posebatch "
                         "classify` first, or pass the right --output DIR")
        if PREDICTIONS in empty and model_version != "all":
            definition = f"SELECT * FROM {ALL_VIEW}"
        else:
            definition = view_sql(model_version, production, versions)
        con.execute(f"CREATE VIEW {PREDICTIONS} AS {definition}")
    except BaseException:
        con.close()
        raise
    return con, empty


def refused_statement(con: Any, query: str) -> str | None:
    """The first statement of ``query`` that is not a read, named by its keyword as typed
    (``COPY``, ``ATTACH``, ``INSTALL``, ``SET`` ...) or else by DuckDB's statement type;
    None when every statement reads."""
    for statement in con.extract_statements(query):
        kind = statement.type.name
        if kind not in READING:
            words = statement.query.split()
            first = words[0].upper() if words else ""
            return first if first.isalpha() and first != "WITH" else kind
    return None


def _refusal(message: str) -> str:
    """DuckDB's permission error as one line naming the file it was denied."""
    found = re.search(r'Cannot access (file|directory) "([^"]*)"', message)
    what = f"reading {found.group(1)} {found.group(2)!r}" if found else message
    return f"SQL refused: {what} (`posebatch sql` reads only {VIEW_NAMES}, no other file)"


def run_sql(output: Path | str, query: str, model_version: str = "current",
            production: str | None = None) -> pa.Table:
    """The result of ``query`` as an Arrow table; a DuckDB error becomes a ``QueryError``,
    a statement that is not a read or reaches for a file a ``QueryError`` starting
    ``SQL refused:`` (see the module docstring). ``model_version``/``production`` define the
    ``predictions`` view (see ``connect``)."""
    import duckdb

    con, _ = connect(output, model_version, production)
    try:
        if not query.strip():
            return pa.table({})
        refused = refused_statement(con, query)
        if refused:
            raise QueryError(f"SQL refused: {refused} statement (`posebatch sql` runs only "
                             f"SELECT/EXPLAIN over {VIEW_NAMES} and writes nothing; save a "
                             "result with --to FILE)")
        return con.sql(query).to_arrow_table()
    except duckdb.PermissionException as exc:
        raise QueryError(_refusal(_first_line(exc))) from None
    except duckdb.Error as exc:
        raise QueryError(f"SQL: {_first_line(exc)}") from None
    except AttributeError:
        raise QueryError("SQL: the statement returned no result set (use SELECT)") from None
    finally:
        con.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
