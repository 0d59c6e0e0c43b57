"""The delivery rows a settled batch moves on: one guarded UPDATE per row, so that a stale
duplicate never moves a row backwards. PostgreSQL takes the fast path in `rows_pg.py`.
And the attempts a retried write must not store twice (`unstored`).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Boolean, Table, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from common.db.models import Attempt, Delivery
from common.db.statuses import FINAL_STATUSES
from common.db.types import UtcDateTime
from dispatcher.settle import rows_pg

_deliveries = cast(Table, Delivery.__table__)
_attempts = cast(Table, Attempt.__table__)
# A stale duplicate must not move a final row backwards, nor an earlier attempt a later one.
# Replays are meant to reopen a final delivery, so they pass.
_UPDATE_DELIVERY = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("b_id"))
    .where(
        or_(
            bindparam("b_replay", type_=Boolean),
            and_(
                # Not `not_in`: an expanding IN cannot run as one executemany.
                *(_deliveries.c.status != status for status in FINAL_STATUSES),
                _deliveries.c.attempts <= bindparam("b_attempts"),
            ),
        )
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        last_status_code=bindparam("b_last_status_code"),
        last_error=bindparam("b_last_error"),
        dead_reason=bindparam("b_dead_reason"),
        next_attempt_at=bindparam("b_next_attempt_at", type_=UtcDateTime()),
        updated_at=bindparam("b_updated_at", type_=UtcDateTime()),
        finished_at=bindparam("b_finished_at", type_=UtcDateTime()),
    )
)


def update_deliveries(session: Session, rows: list[dict[str, Any]]) -> None:
    """Move each delivery row on, unless a later attempt or a final state got there first."""
    if session.get_bind().dialect.name == "postgresql":
        rows_pg.update_deliveries(session, rows)
        return
    session.execute(_UPDATE_DELIVERY, [{f"b_{k}": v for k, v in row.items()} for row in rows])


def unstored(session: Session, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`attempts` less those already stored: the same delivery, attempt and signing time.
    For the retry of a write whose COMMIT may have landed though its answer was lost. (Two
    sends of one attempt, after a redelivery, differ in their signing time: both stay.)"""
    if not attempts:
        return attempts
    a = _attempts.c
    found = session.execute(
        select(a.delivery_id, a.attempt, a.created_at).where(
            a.delivery_id.in_({row["delivery_id"] for row in attempts}),
            a.day.in_({row["day"] for row in attempts}),  # one partition each, usually one
        )
    )
    stored = {tuple(found_row) for found_row in found}
    return [
        row for row in attempts
        if (row["delivery_id"], row["attempt"], row["created_at"]) not in stored
    ]  # fmt: skip
