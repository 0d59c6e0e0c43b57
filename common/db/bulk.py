"""Many rows in one statement: the hot paths' batched writes.

An executemany of N rows is N statements for PostgreSQL (psycopg pipelines them, but each
is still bound and executed on its own) and N parameter sets for SQLAlchemy to build. On
PostgreSQL the rows go instead as one JSON document through `json_to_recordset`: one
statement with constant SQL and one parameter, encoded by the C JSON encoder and parsed by
the server, whatever the batch size (arrays per column through `unnest` cost more: psycopg
escapes array elements in Python). SQLite keeps the plain executemany, cheap in-process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from common.db.session import insert_ignoring_conflicts

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


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
    fields = [f'"{name}" {table.c[name].type.compile(dialect=_PG)}' for name in names]
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
    document = rows_document(session, table, rows)
    session.execute(text(recordset_insert(table, names, ignore_conflicts)), {"rows": document})


def rows_document(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> str:
    """`rows` as the JSON document a `recordset` reads, bound as the columns would be."""
    bind = session.get_bind()
    decorated: list[tuple[str, TypeDecorator[Any]]] = [
        (name, column_type)
        for name in rows[0]
        if name in table.c and isinstance(column_type := table.c[name].type, TypeDecorator)
    ]
    if decorated:  # e.g. UtcDateTime refuses naive datetimes: the same checks as an insert
        rows = [
            {**row, **{n: t.process_bind_param(row[n], bind.dialect) for n, t in decorated}}
            for row in rows
        ]
    return json.dumps(list(rows), default=_plain, separators=(",", ":"))
