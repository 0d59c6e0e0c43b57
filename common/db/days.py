"""The `day` column of the partitioned tables (migration 0011) and lookups by it.

What a lookup may assume about where a row lives (architecture §5, "Lookups by id"):
- a delivery whose id carries a day (`common.ids.day_of`) lives on that day, and so do
  its attempts;
- a delivery lives on its event's day (the router writes both from one timestamp, before
  and after 0011), so its event is found on the delivery's day;
- an event whose id carries a day usually lives on it (`common.ids.event_day`), but a
  producer may choose such an id far from the day it is sent: a miss there is looked for
  again in every partition.
Ids without time (rows from before 0011) name no partition: every partition is read.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def days_of(identifiers: Iterable[str]) -> list[date] | None:
    """The days a set of delivery ids carry, sorted; None when one of them carries none
    (then the lookup must read every partition: rare, only ids from before 0011)."""
    days = set()
    for identifier in identifiers:
        day = day_of(identifier)
        if day is None:
            return None
        days.add(day)
    return sorted(days)


def on_their_days(day_column: Any, identifiers: Iterable[str]) -> list[Any]:
    """`day IN (<the ids' days>)`, the batch twin of `on_its_day`: a batch of ids reads the
    partitions of its days only (usually one). Nothing when an id carries no day."""
    days = days_of(identifiers)
    return [] if not days else [day_column.in_(days)]
