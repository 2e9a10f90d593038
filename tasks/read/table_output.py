"""Writing a query result: an aligned text table, CSV, JSON Lines or Parquet.

Shared by ``posebatch query`` and ``posebatch sql`` so both print the same way. CSV cannot
hold lists, so list columns (``probabilities``, ``warnings``) become JSON text there; JSON
Lines and Parquet keep them as lists.
"""

from __future__ import annotations

import io
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "json", "parquet")
_SUFFIX = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
           ".txt": "table"}
MAX_CELL = 40


def format_for(path: Path | None, fmt: str | None) -> str:
    """The explicit format, else the one the ``--to`` file's suffix implies, else a table."""
    if fmt:
        return fmt
    if path is not None and path.suffix.lower() in _SUFFIX:
        return _SUFFIX[path.suffix.lower()]
    return "table"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, list):
        inner = ", ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
        text = f"[{inner}]"
    else:
        text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_aligned(table: pa.Table) -> str:
    """A fixed-width table: numbers right-aligned, long cells cut with an ellipsis."""
    names = table.column_names
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
               for f in table.schema]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, numeric, strict=True)).rstrip()

    out = [line(names), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def to_jsonl(table: pa.Table) -> str:
    """One JSON object per row (pandas ``read_json(lines=True)``, ``jq`` friendly)."""
    return "".join(json.dumps(r, default=_json_default) + "\n" for r in table.to_pylist())


def records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (timestamps as ISO strings)."""
    return json.loads(json.dumps(table.to_pylist(), default=_json_default))


def _csv_ready(table: pa.Table) -> pa.Table:
    for i, field in enumerate(table.schema):
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            text = [None if v is None else json.dumps(v)
                    for v in table.column(i).to_pylist()]
            table = table.set_column(i, field.name, pa.array(text, pa.string()))
        elif pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), pa.string()))
    return table


def write_result(table: pa.Table, fmt: str, sink: BinaryIO) -> None:
    """Write ``table`` in ``fmt`` to a binary stream (a file or stdout's buffer)."""
    if fmt == "parquet":
        pq.write_table(table, sink)
    elif fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(_csv_ready(table), buf)
        sink.write(buf.getvalue())
    elif fmt == "json":
        sink.write(to_jsonl(table).encode())
    elif fmt == "table":
        sink.write((format_aligned(table) + "\n").encode())
    else:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
