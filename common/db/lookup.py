"""Rows found by id in one partition (architecture §5, "Lookups by id"): one delivery,
its attempts, an event. Where a row lives, and so which partition each reads, is in
`days.py`."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.db.days import on_its_day
from common.db.models import Attempt, Delivery, EventRow
from common.ids import day_of


def delivery(session: Session, delivery_id: str, *conditions: Any) -> Delivery | None:
    """The delivery with this id that also meets `conditions` (a tenant, say), or None."""
    query = select(Delivery).where(
        Delivery.id == delivery_id, *on_its_day(Delivery.day, delivery_id), *conditions
    )
    return session.scalars(query).first()


def attempts(session: Session, delivery_id: str) -> list[Attempt]:
    """A delivery's attempts, oldest first."""
    query = select(Attempt).where(
        Attempt.delivery_id == delivery_id, *on_its_day(Attempt.day, delivery_id)
    )
    return list(session.scalars(query.order_by(Attempt.id)))


def event(
    session: Session, tenant_id: str, event_id: str, day: date | None = None
) -> EventRow | None:
    """The event, read on `day` (a delivery's: its event lives there too) or else on the
    day its id carries; in every partition only when that misses (a producer's id of
    another day, a row from before 0011) or no day is known."""
    query = select(EventRow).where(EventRow.tenant_id == tenant_id, EventRow.id == event_id)
    day = day or day_of(event_id)
    if day is not None:
        found = session.scalars(query.where(EventRow.day == day)).first()
        if found is not None:
            return found
    return session.scalars(query).first()
