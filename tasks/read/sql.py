"""SQL over the output datasets with DuckDB, for everything the query flags do not cover.

``predictions`` and ``rejections`` are views over the very ``pyarrow.dataset`` objects
``read_predictions`` scans (same files, same schema, staging and dot files skipped): DuckDB
pushes its filters and projections into that scan, so ``WHERE date >= '2024-05-01'`` prunes
partitions without opening older files, and ``date`` is a DATE column. Going through Arrow
rather than DuckDB's own Parquet reader also means no file is opened just to learn the schema.
A dataset that does not exist yet is an empty view with the right columns, so a query over
the other one still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks.io.schema import PREDICTIONS, REJECTIONS
from tasks.read.query import NoData, QueryError, empty_table, open_dataset

VIEWS = (PREDICTIONS, REJECTIONS)


def connect(output: Path | str) -> tuple[Any, list[str]]:
    """A DuckDB connection with both views defined; also the names of the empty ones.

    Raises ``NoData`` when neither dataset has a file.
    """
    import duckdb

    con = duckdb.connect()
    empty = []
    for name in VIEWS:
        try:
            dataset = open_dataset(output, name)
        except NoData as exc:
            if "does not exist" in str(exc):
                con.close()
                raise
            empty.append(name)
            dataset = empty_table(name)
        con.register(f"_{name}_arrow", dataset)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_arrow")
    if len(empty) == len(VIEWS):
        con.close()
        raise NoData(f"no predictions or rejections under {output}: run `posebatch classify` "
                     "first, or pass the right --output DIR")
    return con, empty


def run_sql(output: Path | str, query: str) -> pa.Table:
    """The result of ``query`` as an Arrow table; a DuckDB error becomes a ``QueryError``."""
    import duckdb

    con, _ = connect(output)
    try:
        return con.sql(query).to_arrow_table() if query.strip() else pa.table({})
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"SQL: {first}") from None
    except AttributeError:
        raise QueryError("SQL: the statement returned no result set (use SELECT)") from None
    finally:
        con.close()
