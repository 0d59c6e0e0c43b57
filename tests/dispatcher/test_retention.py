"""Retention (`hookline gc`): removes old finished rows and keeps dead letters unless told."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Attempt, Delivery, EventRow
from common.db.statuses import DeliveryStatus
from common.wire import utcnow
from dispatcher import retention
from tests import builders
from tests.dead_letters import dead_letter


def test_gc_removes_old_finished_rows_and_keeps_dead_letters_and_live_ones(
    sessions: sessionmaker[Session],
) -> None:
    old = utcnow() - timedelta(days=40)
    with sessions() as session, session.begin():
        tenant = builders.tenant(session).id
        sub, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/")
        done = []
        for _ in range(5):
            m = builders.delivery(session, builders.event(tenant), sub.id)
            row = session.get(Delivery, m.delivery_id)
            assert row is not None
            row.status, row.finished_at = DeliveryStatus.SUCCEEDED, old
            session.add(
                Attempt(
                    delivery_id=row.id,
                    attempt=1,
                    outcome="success",
                    status_code=200,
                    duration_s=0.01,
                    created_at=old,
                )
            )
            session.get(EventRow, (tenant, m.event_id)).received_at = old  # type: ignore[union-attr]
            done.append(row.id)
        dead = dead_letter(session, tenant, sub.id, died_at=old)
        session.get(EventRow, (tenant, dead.event_id)).received_at = old  # type: ignore[union-attr]
        live = builders.delivery(session, builders.event(tenant), sub.id)
        session.get(EventRow, (tenant, live.event_id)).received_at = old  # type: ignore[union-attr]

    removed = retention.collect(sessions, utcnow() - timedelta(days=30), batch_size=2)

    assert (removed.deliveries, removed.attempts, removed.events) == (5, 5, 5)
    with sessions() as session:
        left = dict(session.execute(select(Delivery.id, Delivery.status)).tuples().all())
        events = session.scalar(select(func.count()).select_from(EventRow))
    assert left == {dead.id: DeliveryStatus.DEAD, live.delivery_id: DeliveryStatus.PENDING}
    assert events == 2

    removed = retention.collect(sessions, utcnow() - timedelta(days=30), include_dead=True)
    assert (removed.deliveries, removed.events) == (1, 1)
