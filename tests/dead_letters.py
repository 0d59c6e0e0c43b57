"""Dead letters as rows, and what a replay published, for the operations tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from common.db.models import Delivery
from common.db.statuses import DeliveryStatus
from common.transport import Message, Transport
from common.wire import DeliveryMessage, decode, utcnow
from tests import builders
from tests.queues import DELIVERY_QUEUES


@dataclass(frozen=True)
class Dead:
    id: str
    event_id: str
    subscription_id: str
    webhook_id: str  # what its requests carried


def dead_letter(
    session: Session,
    tenant_id: str,
    subscription_id: str,
    *,
    type: str = "order.created",
    reason: str = "max_attempts",
    status_code: int | None = 500,
    died_at: datetime | None = None,
    attempts: int = 3,
) -> Dead:
    """An event and its delivery, dead after `attempts` tries (as the settler leaves it)."""
    message = builders.delivery(session, builders.event(tenant_id, type=type), subscription_id)
    row = session.get(Delivery, message.delivery_id)
    assert row is not None
    row.status, row.dead_reason, row.attempts = DeliveryStatus.DEAD, reason, attempts
    row.last_status_code = status_code
    row.last_error = None if status_code else "connection refused"
    row.finished_at = died_at or utcnow() - timedelta(minutes=1)
    row.updated_at = row.finished_at
    session.flush()
    return Dead(row.id, row.event_id, subscription_id, row.webhook_id)


def published_copies(transport: Transport) -> list[DeliveryMessage]:
    """Consume (and ack) every delivery message waiting in the delivery queues."""
    return [decode(DeliveryMessage, message.body) for message in published(transport)]


def published(transport: Transport) -> list[Message]:
    """`published_copies` as the messages themselves, headers and all."""
    consumer = transport.consume_many(DELIVERY_QUEUES, prefetch=10_000)
    found = []
    try:
        for message in consumer:
            if message is None:
                break
            found.append(message)
            consumer.ack(message)
    finally:
        consumer.close()
    return found
