"""`unstored`: what a retried write of the settler leaves out, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from common.ids import day_of
from dispatcher.settle.rows import unstored
from tests import builders

SIGNED = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_unstored_leaves_out_only_the_attempts_stored_at_their_signing_time(
    db: sessionmaker[Session],
) -> None:
    with db() as session, session.begin():
        tenant = builders.tenant(session)
        sub, _ = builders.subscription(session, tenant.id, "http://a.test")
        first, second = (
            builders.delivery(session, builders.event(tenant.id), sub.id) for _ in range(2)
        )
        builders.attempt(session, first.delivery_id, 1, at=SIGNED)

    def row(delivery_id: str, created_at: datetime) -> dict[str, object]:
        return {"delivery_id": delivery_id, "attempt": 1, "created_at": created_at,
                "day": day_of(delivery_id)}  # fmt: skip

    stored = row(first.delivery_id, SIGNED)
    resent = row(first.delivery_id, SIGNED + timedelta(microseconds=1))  # sent again later
    other = row(second.delivery_id, SIGNED)
    with db() as session:
        assert unstored(session, [stored, resent, other]) == [resent, other]
        assert unstored(session, []) == []
