"""Writes a batch of routed events and their delivery rows in one transaction.

Events are unique per (tenant, id), and only the transaction whose insert created an event
row publishes its deliveries: a repeated id (a producer retry, a second POST, a copy routed
by another router at the same moment) creates nothing and publishes nothing, so it is not
delivered twice even while the first copy is still queued.

The one exception is recovery: a router that committed the rows and died (or lost its
broker) before the delivery messages were confirmed leaves deliveries nobody will publish.
For events the caller names in `recover` — its message was redelivered, or this process
itself committed them without publishing — the deliveries that are not final yet are
published again, marked for the dispatcher to re-check.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, text, tuple_
from sqlalchemy.orm import Session

from common.db.bulk import insert_rows, recordset, rows_document
from common.db.models import FINAL_STATUSES, PENDING, Delivery, EventRow
from common.db.session import insert_ignoring_conflicts
from common.wire import DeliveryMessage, Event, delivery_id_for, utcnow
from router.index import Target

Key = tuple[str, str]  # (tenant, event id)

_events = cast(Table, EventRow.__table__)
_deliveries = cast(Table, Delivery.__table__)
_EVENT_COLUMNS = ("tenant_id", "id", "type", "operation", "timestamp", "data", "received_at")


@dataclass(frozen=True)
class Routed:
    message: DeliveryMessage
    recheck: bool  # published before: the dispatcher must look at the row first


def persist_batch(
    session: Session,
    routed: Sequence[tuple[Event, list[Target]]],
    recover: Collection[Key] = (),
) -> list[Routed]:
    """Insert new events and deliveries; return the delivery messages to publish.

    The caller commits, then publishes, then acks: a crash anywhere before the ack is
    repaired by the redelivery, whose key the caller passes in `recover`.
    """
    if not routed:
        return []
    now = utcnow()
    event_rows: dict[Key, dict[str, object]] = {}
    for event, _ in routed:
        event_rows.setdefault((event.tenant, event.id), _event_row(event, now))
    created = _insert_events(session, list(event_rows.values()))
    delivery_rows: dict[str, dict[str, object]] = {}
    out: list[Routed] = []
    pending = set(created)
    for event, targets in routed:
        key = (event.tenant, event.id)
        if key not in pending:
            continue
        pending.discard(key)  # the same id twice in one batch: routed once
        for target in targets:
            delivery_id = delivery_id_for(event.tenant, event.id, target.subscription_id)
            delivery_rows[delivery_id] = _delivery_row(event, delivery_id, target, now)
            out.append(Routed(_message(event, delivery_id, target.subscription_id), False))
    # ON CONFLICT only matters for a delivery row left without its event (never written so).
    insert_rows(session, _deliveries, list(delivery_rows.values()), ignore_conflicts=True)
    out.extend(_republish_unfinished(session, routed, set(recover) - created))
    return out


def _insert_events(session: Session, rows: list[dict[str, object]]) -> set[Key]:
    """Insert `rows`, skipping ids that exist; the keys this statement created."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        columns = ", ".join(f'"{name}"' for name in _EVENT_COLUMNS)
        statement: Any = text(
            f'INSERT INTO "{_events.name}" ({columns}) SELECT {columns} '
            f"FROM {recordset(_events, _EVENT_COLUMNS)} "
            "ON CONFLICT DO NOTHING RETURNING tenant_id, id"
        )
        result = session.execute(statement, {"rows": rows_document(session, _events, rows)})
    else:
        statement = insert_ignoring_conflicts(bind, _events).returning(
            _events.c.tenant_id, _events.c.id
        )
        result = session.execute(statement, rows)
    return {(tenant, event_id) for tenant, event_id in result.tuples()}


def _republish_unfinished(
    session: Session, routed: Sequence[tuple[Event, list[Target]]], recover: set[Key]
) -> list[Routed]:
    events = {(e.tenant, e.id): e for e, _ in routed if (e.tenant, e.id) in recover}
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


def _event_row(event: Event, now: datetime) -> dict[str, object]:
    return {
        "tenant_id": event.tenant,
        "id": event.id,
        "type": event.type,
        "operation": event.operation,
        "timestamp": event.timestamp,
        "data": event.data,
        "received_at": now,
    }


def _delivery_row(
    event: Event, delivery_id: str, target: Target, now: datetime
) -> dict[str, object]:
    return {
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


def _message(event: Event, delivery_id: str, subscription_id: str) -> DeliveryMessage:
    return DeliveryMessage(
        delivery_id=delivery_id,
        event_id=event.id,
        tenant=event.tenant,
        subscription_id=subscription_id,
        attempt=1,
        event=event,
    )
