"""What PostgreSQL does with the statements under test: the plan of one query, and the
partitions that every statement some code runs actually reads.

`partitions_read` explains each statement just before it runs, on the same connection,
in the same transaction and with the same parameters (`EXPLAIN ANALYZE` inside a savepoint
that is rolled back, so a write is not made twice), for every engine of the process: the
code under test runs as it is, the CLI's own engine included.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import psycopg
from sqlalchemy import Engine, Select, event, text

from common.db import partitions

_EXPLAINED = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


def explain(engine: Engine, query: Select[Any]) -> dict[str, Any]:
    """`EXPLAIN (ANALYZE, BUFFERS)` of `query`, its parameters written in."""
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        raw = connection.execute(text(f"EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS) {compiled}"))
        result: dict[str, Any] = raw.scalar_one()[0]
    return result


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


@dataclass(frozen=True)
class Read:
    """One statement and the partitions its plan read, by table."""

    statement: str
    partitions: dict[str, set[str]]
    plan: dict[str, Any]

    def days(self, *tables: str) -> set[date]:
        """The days of the partitions read (of `tables`; of any when none are named)."""
        return {
            partitions.day_of(name)
            for table, names in self.partitions.items()
            if not tables or table in tables
            for name in names
        }

    def __str__(self) -> str:
        return f"{self.statement[:600]}\nread {self.partitions}\n{json.dumps(self.plan)[:3000]}"


def _read(plan: dict[str, Any]) -> dict[str, set[str]]:
    """The partitions a plan's scans ran on at least once (a pruned one is not in the plan,
    or shows zero loops: run-time pruning)."""
    found: dict[str, set[str]] = {}
    for node in nodes(plan["Plan"]):
        relation = node.get("Relation Name", "")
        if partitions.is_partition(relation) and node.get("Actual Loops", 0) > 0:
            found.setdefault(relation.rsplit("_", 1)[0], set()).add(relation)
    return found


@contextmanager
def partitions_read() -> Iterator[list[Read]]:
    """The `Read` of every statement run on PostgreSQL inside the block, by any thread."""
    reads: list[Read] = []
    lock = threading.Lock()

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, _c: Any, many: bool
    ) -> None:
        if conn.dialect.name != "postgresql":
            return
        if statement.lstrip().split(None, 1)[0].upper() not in _EXPLAINED:
            return
        raw = cursor.connection
        with raw.cursor() as probe:
            if raw.autocommit:
                probe.execute("BEGIN")
            probe.execute("SAVEPOINT plan_probe")  # psycopg begins first when idle
            try:
                probe.execute(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                    parameters[0] if many else parameters,
                )
                plan = probe.fetchone()[0][0]
            finally:
                probe.execute("ROLLBACK TO SAVEPOINT plan_probe")
                probe.execute("RELEASE SAVEPOINT plan_probe")
                if raw.autocommit:
                    probe.execute("ROLLBACK")
        with lock:
            reads.append(Read(statement, _read(plan), plan))

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield reads
    finally:
        event.remove(Engine, "before_cursor_execute", before)


def generic_plan(engine: Engine, statement: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """`EXPLAIN (ANALYZE)` of `statement` (as psycopg got it, `%(name)s` placeholders) as
    a prepared statement's generic plan: what a connection that ran it five times gets
    when PostgreSQL finds the generic plan no dearer (psycopg prepares at the fifth run).
    The statement runs in a transaction that is rolled back."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m[1]) + 1}", statement)
    with engine.connect() as connection:
        raw = cast(psycopg.Connection[Any], connection.connection.dbapi_connection)
        with psycopg.ClientCursor(raw) as cursor:
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            cursor.execute("PREPARE generic_probe AS " + numbered)
            arguments = ", ".join(["%s"] * len(names))
            cursor.execute(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE generic_probe({arguments})",
                [parameters[name] for name in names],
            )
            row = cursor.fetchone()
            cursor.execute("DEALLOCATE generic_probe")
        connection.rollback()
    assert row is not None
    plan: dict[str, Any] = row[0][0]
    return plan


def assert_one_day(reads: list[Read], day: date, *tables: str) -> None:
    """Some statement read a partition (of `tables`), and every one that did read `day`'s
    partitions only."""
    touched = [read for read in reads if read.days(*tables)]
    assert touched, "no statement read a partition: " + "\n".join(r.statement for r in reads)
    wrong = [read for read in touched if read.days(*tables) != {day}]
    assert not wrong, f"read other days than {day}:\n\n" + "\n\n".join(map(str, wrong))
