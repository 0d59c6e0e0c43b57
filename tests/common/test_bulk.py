"""Batched inserts: one statement on PostgreSQL, the same rows as a plain insert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError, StatementError

from common.db.bulk import insert_rows
from common.db.models import EventRow
from common.db.session import make_engine, make_sessionmaker

EVENTS = cast(Table, EventRow.__table__)


TODAY = datetime.now(UTC).date()


def rows(n: int, *, start: int = 0) -> list[dict[str, object]]:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    return [
        {
            "tenant_id": "ten_1",
            "id": f"evt_{i}",
            "type": "order.created",
            "operation": "sync" if i % 2 else None,
            "timestamp": at + timedelta(seconds=i),
            "data": {"n": i, "nested": {"list": [1, "two", None]}, "text": "é\"'\\"},
            "received_at": at,
            "day": TODAY,  # the partition day (migration 0011): one that exists
            "traceparent": f"00-{i:032x}-{i + 1:016x}-01" if i % 3 else None,  # 0015
        }
        for i in range(start, start + n)
    ]


def test_rows_inserted_in_bulk_read_back_exactly_as_given(database_url: str) -> None:
    sessions = make_sessionmaker(make_engine(database_url))
    given = rows(250)
    with sessions.begin() as session:
        insert_rows(session, EVENTS, given)
    with sessions() as session:
        stored = [
            dict(r._mapping) for r in session.execute(select(EVENTS).order_by(EVENTS.c.timestamp))
        ]
    assert stored == given


def test_conflicting_rows_are_skipped_only_when_asked(database_url: str) -> None:
    sessions = make_sessionmaker(make_engine(database_url))
    with sessions.begin() as session:
        insert_rows(session, EVENTS, rows(3))
    with sessions.begin() as session:
        insert_rows(session, EVENTS, rows(5), ignore_conflicts=True)  # 0-2 exist already
    with sessions() as session:
        assert len(session.execute(select(EVENTS.c.id)).all()) == 5
    with pytest.raises(IntegrityError), sessions.begin() as session:
        insert_rows(session, EVENTS, rows(1, start=4))


def test_no_rows_is_no_statement(database_url: str) -> None:
    sessions = make_sessionmaker(make_engine(database_url))
    with sessions.begin() as session:
        insert_rows(session, EVENTS, [])
    with sessions() as session:
        assert session.execute(select(EVENTS.c.id)).all() == []


def test_repeated_times_in_any_offset_are_stored_as_the_same_instants(database_url: str) -> None:
    """A batch's repeated values are formatted once each: the same instant given in two
    offsets, and distinct instants beside it, all read back as given (in UTC)."""
    sessions = make_sessionmaker(make_engine(database_url))
    plus_two = timezone(timedelta(hours=2))
    given = rows(6)
    for n, row in enumerate(given):
        at = cast(datetime, row["received_at"])
        row["received_at"] = at.astimezone(plus_two) if n % 2 else at
        row["timestamp"] = at + timedelta(minutes=n % 3)
    with sessions.begin() as session:
        insert_rows(session, EVENTS, given)
    with sessions() as session:
        stored = session.execute(
            select(EVENTS.c.received_at, EVENTS.c.timestamp).order_by(EVENTS.c.id)
        ).all()
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert [tuple(r) for r in stored] == [(at, at + timedelta(minutes=n % 3)) for n in range(6)]
    assert all(r[0].utcoffset() == timedelta(0) for r in stored)


def test_a_naive_time_is_refused_as_a_plain_insert_would(database_url: str) -> None:
    sessions = make_sessionmaker(make_engine(database_url))
    given = rows(2)
    given[1]["received_at"] = datetime(2026, 12, 1, 12, 0)  # no zone: whose noon?
    with pytest.raises((ValueError, StatementError), match="naive"), sessions.begin() as session:
        insert_rows(session, EVENTS, given)
