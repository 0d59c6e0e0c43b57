"""The settler's SQL differs between SQLite and PostgreSQL: its tests run on both. And the
helpers its tests share: deliveries given, their messages taken, a settler, a row read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Delivery
from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from common.transport import Consumer, Message
from common.transport import topology as tp
from common.wire import DeliveryMessage
from dispatcher.settle import Settler
from tests import builders
from tests.dispatcher.conftest import Harness


@pytest.fixture
def db(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def taken(harness: Harness, count: int) -> tuple[Consumer, list[Message]]:
    consumer = harness.transport.consume(tp.DELIVERIES, prefetch=100)
    messages: list[Message] = []
    for message in consumer:
        if message is None:
            break
        messages.append(message)
        if len(messages) == count:
            break
    assert len(messages) == count
    return consumer, messages


def given(harness: Harness, count: int) -> list[DeliveryMessage]:
    with harness.db() as session, session.begin():
        tenant = builders.tenant(session)
        sub, _ = builders.subscription(session, tenant.id, "http://a.test")
        deliveries = [
            builders.delivery(session, builders.event(tenant.id), sub.id) for _ in range(count)
        ]
    for delivery in deliveries:
        harness.publish(delivery)
    return deliveries


def settler(harness: Harness, consumer: Consumer) -> Settler:
    return Settler(
        consumer, harness.transport, harness.db, Metrics(CollectorRegistry()), publish_timeout_s=5
    )


def row(db: sessionmaker[Session], delivery_id: str) -> Delivery:
    with db() as session:
        found = session.get(Delivery, delivery_id)
        assert found is not None
        return found
