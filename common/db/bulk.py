"""Many rows in one statement: the hot paths' batched writes.

An executemany of N rows is N statements for PostgreSQL (psycopg pipelines them, but each
is still bound and executed on its own) and N parameter sets for SQLAlchemy to build. On
PostgreSQL the rows go instead as one JSON document through `json_to_recordset`: one
statement with constant SQL and one parameter, encoded by the C JSON encoder and parsed by
the server, whatever the batch size (arrays per column through `unnest` cost more: psycopg
escapes array elements in Python). SQLite keeps the plain executemany, cheap in-process.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Date, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from common.db.session import insert_ignoring_conflicts

POSTGRES = postgresql.dialect()  # type: ignore[no-untyped-call]  # to compile types and binds


def recordset(
    table: Table,
    names: Sequence[str],
    extra: Mapping[str, str] | None = None,
    *,
    param: str = "rows",
    alias: str = "r",
) -> str:
    """The FROM item `json_to_recordset(:rows) AS r(...)`: `names` typed as `table`'s
    columns, then the `extra` fields (name: SQL type) that are not columns."""
    fields = [f'"{name}" {table.c[name].type.compile(dialect=POSTGRES)}' for name in names]
    fields += [f'"{name}" {sql_type}' for name, sql_type in (extra or {}).items()]
    return f"json_to_recordset(CAST(:{param} AS json)) AS {alias}({', '.join(fields)})"


def recordset_insert(
    table: Table,
    names: Sequence[str],
    ignore_conflicts: bool = False,
    *,
    param: str = "rows",
    alias: str = "r",
) -> str:
    """`INSERT INTO table (names) SELECT names FROM recordset(...)`, as SQL text."""
    columns = ", ".join(f'"{name}"' for name in names)
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    source = recordset(table, names, param=param, alias=alias)
    return f'INSERT INTO "{table.name}" ({columns}) SELECT {columns} FROM {source}{conflict}'


def _plain(value: Any) -> Any:
    if isinstance(value, date):  # datetimes too (a subclass)
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a bulk insert")


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    ignore_conflicts: bool = False,
) -> None:
    """Insert `rows` (every row with the same keys) in one statement on PostgreSQL."""
    if not rows:
        return
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        statement = insert_ignoring_conflicts(bind, table) if ignore_conflicts else table.insert()
        session.execute(statement, list(rows))
        return
    names = list(rows[0])
    document = rows_document(table, rows)
    session.execute(text(recordset_insert(table, names, ignore_conflicts)), {"rows": document})


def rows_document(table: Table, rows: Sequence[Mapping[str, Any]]) -> str:
    """`rows` as the JSON document a `recordset` reads (on PostgreSQL), bound as the
    columns would be there."""
    columns = _text_columns(table, tuple(rows[0]))
    if not columns:
        return json.dumps(list(rows), default=_plain, separators=(",", ":"))
    out = [dict(row) for row in rows]
    for name, column_type in columns:
        # A batch repeats its times and days (the settler's `now`, a day per batch): each
        # distinct value is bound and formatted once.
        texts: dict[Any, Any] = {}
        for row in out:
            value = row[name]
            if not isinstance(value, date):  # None, or a value that may not be hashable
                if value is not None:
                    row[name] = _text(column_type, value)
                continue
            text_value = texts.get(value)
            if text_value is None:
                text_value = texts[value] = _text(column_type, value)
            row[name] = text_value
    return json.dumps(out, default=_plain, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def _text_columns(
    table: Table, names: tuple[str, ...]
) -> tuple[tuple[str, TypeDecorator[Any] | None], ...]:
    """The columns of `names` whose values go in as text: those of a decorated type,
    through its bind processing (e.g. UtcDateTime refuses naive datetimes, the same
    check as an insert), and the dates."""
    found: list[tuple[str, TypeDecorator[Any] | None]] = []
    for name in names:
        if name not in table.c:
            continue
        column_type = table.c[name].type
        if isinstance(column_type, TypeDecorator):
            found.append((name, column_type))
        elif isinstance(column_type, Date):
            found.append((name, None))
    return tuple(found)


def _text(column_type: TypeDecorator[Any] | None, value: Any) -> Any:
    if column_type is not None:
        value = column_type.process_bind_param(value, POSTGRES)
    return _plain(value) if isinstance(value, date) else value
