"""Batched inserts: one statement on PostgreSQL, the same rows as a plain insert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError

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
