"""An endpoint's health: the share of its finished deliveries that succeeded, over the
last hour and day (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Delivery
from common.db.statuses import DeliveryStatus
from common.wire import utcnow
from hookline.services import deliveries
from tests import builders


def test_health_counts_finished_deliveries_per_window(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, session.begin():
        tenant = builders.tenant(session)
        sub, _ = builders.subscription(session, tenant.id, "http://127.0.0.1:9/a")
        other, _ = builders.subscription(session, tenant.id, "http://127.0.0.1:9/b")
        ids = [
            builders.delivery(session, builders.event(tenant.id), sub.id).delivery_id
            for _ in range(5)
        ]
        builders.delivery(session, builders.event(tenant.id), other.id)
        now = utcnow()
        # ids[0..1] succeeded now, ids[2] died now, ids[3] succeeded 5 h ago, ids[4] pending.
        ok, dead = DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD
        for i, status, age in ((0, ok, 0), (1, ok, 0), (2, dead, 0), (3, ok, 5)):
            at = now - timedelta(hours=age)
            session.execute(
                update(Delivery)
                .where(Delivery.id == ids[i])
                .values(status=status, created_at=at, finished_at=at)
            )
    with sessions() as session:
        health = deliveries.health(session, tenant.id, sub.id)
        empty = deliveries.health(session, "ten_other", sub.id)
    assert (health.finished_hour, health.finished_day, health.dead_day) == (3, 4, 1)
    assert health.last_hour == 2 / 3 and health.last_day == 3 / 4
    assert empty.last_hour is None and empty.finished_day == 0
