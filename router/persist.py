"""Writes a batch of routed events and their delivery rows in one transaction.

Events are unique per (tenant, id). A repeated event (a producer retry, or a redelivery
after the router crashed between commit and ack) creates nothing new: its deliveries that
are not final yet are published again, marked for the dispatcher to re-check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, select, tuple_
from sqlalchemy.orm import Session

from common.db.bulk import insert_rows
from common.db.models import FINAL_STATUSES, PENDING, Delivery, EventRow
from common.wire import DeliveryMessage, Event, delivery_id_for, utcnow
from router.index import Target

_events = cast(Table, EventRow.__table__)
_deliveries = cast(Table, Delivery.__table__)


@dataclass(frozen=True)
class Routed:
    message: DeliveryMessage
    recheck: bool  # published before: the dispatcher must look at the row first


def persist_batch(session: Session, routed: Sequence[tuple[Event, list[Target]]]) -> list[Routed]:
    """Insert new events and deliveries; return the delivery messages to publish.

    The caller commits, then publishes, then acks: a crash anywhere before the ack is
    repaired by the redelivery, which lands in the "seen before" branch below.
    """
    if not routed:
        return []
    keys = list({(event.tenant, event.id) for event, _ in routed})
    seen = set(
        session.execute(
            select(EventRow.tenant_id, EventRow.id).where(
                tuple_(EventRow.tenant_id, EventRow.id).in_(keys)
            )
        ).tuples()
    )
    now = utcnow()
    event_rows: dict[tuple[str, str], dict[str, object]] = {}
    delivery_rows: dict[str, dict[str, object]] = {}
    out: list[Routed] = []
    for event, targets in routed:
        key = (event.tenant, event.id)
        if key in seen or key in event_rows:
            continue
        event_rows[key] = {
            "tenant_id": event.tenant,
            "id": event.id,
            "type": event.type,
            "operation": event.operation,
            "timestamp": event.timestamp,
            "data": event.data,
            "received_at": now,
        }
        for target in targets:
            delivery_id = delivery_id_for(event.tenant, event.id, target.subscription_id)
            delivery_rows[delivery_id] = {
                "id": delivery_id,
                "tenant_id": event.tenant,
                "event_id": event.id,
                "subscription_id": target.subscription_id,
                "event_type": event.type,
                "status": PENDING,
                "attempts": 0,
                "replay_count": 0,
                "created_at": now,
                "updated_at": now,
            }
            out.append(Routed(_message(event, delivery_id, target.subscription_id), False))
    # One statement per table for the whole batch (see common/db/bulk.py).
    insert_rows(session, _events, list(event_rows.values()), ignore_conflicts=True)
    insert_rows(session, _deliveries, list(delivery_rows.values()), ignore_conflicts=True)
    out.extend(_republish_unfinished(session, routed, seen))
    return out


def _republish_unfinished(
    session: Session,
    routed: Sequence[tuple[Event, list[Target]]],
    seen: set[tuple[str, str]],
) -> list[Routed]:
    events = {(e.tenant, e.id): e for e, _ in routed if (e.tenant, e.id) in seen}
    if not events:
        return []
    rows = session.execute(
        select(Delivery.id, Delivery.tenant_id, Delivery.event_id, Delivery.subscription_id)
        .where(tuple_(Delivery.tenant_id, Delivery.event_id).in_(list(events)))
        .where(Delivery.status.not_in(FINAL_STATUSES))
    )
    return [
        Routed(_message(events[(r.tenant_id, r.event_id)], r.id, r.subscription_id), True)
        for r in rows
    ]


def _message(event: Event, delivery_id: str, subscription_id: str) -> DeliveryMessage:
    return DeliveryMessage(
        delivery_id=delivery_id,
        event_id=event.id,
        tenant=event.tenant,
        subscription_id=subscription_id,
        attempt=1,
        event=event,
    )
