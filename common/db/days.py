"""The `day` column of the partitioned tables (migration 0011) and lookups by it."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Date
from sqlalchemy.orm import Mapped, mapped_column

from common.ids import day_of, event_day
from common.wire import utcnow


def partition_day(source: str, *, event: bool = False) -> Mapped[date]:
    """The partition day (migration 0011): on PostgreSQL `events`, `deliveries` and
    `attempts` are partitioned by it and their primary keys include it; on SQLite it is a
    plain column. It defaults to the day the row's `source` id carries, else today."""

    def default(context: Any) -> date:
        value = context.get_current_parameters().get(source)
        today = utcnow().date()
        if not isinstance(value, str):
            return today
        return event_day(value, today) if event else (day_of(value) or today)

    return mapped_column(Date, default=default, nullable=False)


def on_its_day(day_column: Any, identifier: str) -> list[Any]:
    """`day = <the id's day>` when the id carries one: the condition that lets PostgreSQL
    read one partition. Nothing for an id without time (before 0011): every partition."""
    day = day_of(identifier)
    return [] if day is None else [day_column == day]
