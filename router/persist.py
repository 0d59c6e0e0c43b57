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

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, text, tuple_
from sqlalchemy.orm import Session

from common.db.bulk import recordset
from common.db.models import FINAL_STATUSES, PENDING, Delivery, EventRow
from common.db.session import insert_ignoring_conflicts
from common.db.types import UtcDateTime
from common.wire import Event, delivery_id_for, utcnow
from router.index import Target

Key = tuple[str, str]  # (tenant, event id)

_events = cast(Table, EventRow.__table__)
_deliveries = cast(Table, Delivery.__table__)
_STAMP = UtcDateTime()  # refuses naive timestamps, as an ORM insert of the column would

# One statement per table and batch on PostgreSQL (see common/db/bulk.py): the rows go as
# one JSON document, and what every row of a batch shares (its time, the new delivery's
# state) as plain parameters. ON CONFLICT on deliveries only matters for a delivery row
# left without its event, which the router never writes.
_EVENT_FIELDS = ("tenant_id", "id", "type", "operation", "timestamp", "data")
_DELIVERY_FIELDS = ("id", "tenant_id", "event_id", "subscription_id", "event_type")


def _columns(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


_PG_INSERT_EVENTS = text(
    f'INSERT INTO events ({_columns(_EVENT_FIELDS)}, "received_at") '
    f"SELECT {_columns(_EVENT_FIELDS)}, :now FROM {recordset(_events, _EVENT_FIELDS)} "
    'ON CONFLICT DO NOTHING RETURNING "tenant_id", "id"'
).bindparams(bindparam("now", type_=UtcDateTime()))
_PG_INSERT_DELIVERIES = text(
    f"INSERT INTO deliveries ({_columns(_DELIVERY_FIELDS)}, "
    '"status", "attempts", "replay_count", "created_at", "updated_at") '
    f"SELECT {_columns(_DELIVERY_FIELDS)}, '{PENDING}', 0, 0, :now, :now "
    f"FROM {recordset(_deliveries, _DELIVERY_FIELDS)} ON CONFLICT DO NOTHING"
).bindparams(bindparam("now", type_=UtcDateTime()))


@dataclass(frozen=True)
class Routed:
    """One delivery message to publish: `body` is its `DeliveryMessage` (attempt 1)."""

    delivery_id: str
    event: Event
    body: bytes
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
    events: dict[Key, Event] = {}
    for event, _ in routed:
        events.setdefault((event.tenant, event.id), event)
    created = _insert_events(session, list(events.values()), now)
    delivery_rows: dict[str, dict[str, object]] = {}
    out: list[Routed] = []
    pending = set(created)
    for event, targets in routed:
        key = (event.tenant, event.id)
        if key not in pending:
            continue
        pending.discard(key)  # the same id twice in one batch: routed once
        message = _Messages(event)
        for target in targets:
            delivery_id = delivery_id_for(event.tenant, event.id, target.subscription_id)
            delivery_rows[delivery_id] = {
                "id": delivery_id,
                "tenant_id": event.tenant,
                "event_id": event.id,
                "subscription_id": target.subscription_id,
                "event_type": event.type,
            }
            out.append(message.to(delivery_id, target.subscription_id, recheck=False))
    _insert_deliveries(session, list(delivery_rows.values()), now)
    out.extend(_republish_unfinished(session, routed, set(recover) - created))
    return out


def _insert_events(session: Session, events: list[Event], now: datetime) -> set[Key]:
    """Insert `events`, skipping ids that exist; the keys this statement created."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        statement = insert_ignoring_conflicts(bind, _events).returning(
            _events.c.tenant_id, _events.c.id
        )
        result = session.execute(statement, [_event_row(e, now) for e in events])
        return {(tenant, event_id) for tenant, event_id in result.tuples()}
    rows = [
        {
            "tenant_id": e.tenant,
            "id": e.id,
            "type": e.type,
            "operation": e.operation,
            "timestamp": _STAMP.process_bind_param(e.timestamp, bind.dialect),
            "data": e.data,
        }
        for e in events
    ]
    result = session.execute(_PG_INSERT_EVENTS, {"rows": _document(rows), "now": now})
    return {(tenant, event_id) for tenant, event_id in result.tuples()}


def _insert_deliveries(session: Session, rows: list[dict[str, object]], now: datetime) -> None:
    """Insert new delivery rows (`pending`, no attempt yet) in one statement."""
    if not rows:
        return
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        constant = {"status": PENDING, "attempts": 0, "replay_count": 0}
        full = [{**row, **constant, "created_at": now, "updated_at": now} for row in rows]
        session.execute(insert_ignoring_conflicts(bind, _deliveries), full)
        return
    session.execute(_PG_INSERT_DELIVERIES, {"rows": _document(rows), "now": now})


def _document(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as `json_to_recordset` reads them; datetimes as ISO 8601 (bound and checked
    as the column would bind them, see `_STAMP`)."""
    return json.dumps(rows, default=datetime.isoformat, separators=(",", ":"))


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
    messages = {key: _Messages(event) for key, event in events.items()}
    return [
        messages[(r.tenant_id, r.event_id)].to(r.id, r.subscription_id, recheck=True) for r in rows
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


class _Messages:
    """The delivery messages of one event, its JSON encoded once for all of them.

    Byte for byte what `encode(DeliveryMessage(..., attempt=1, event=event))` gives (a
    test in tests/router holds the two together): the model is built and serialised per
    delivery otherwise, which is a large share of the router's CPU with many targets.
    """

    def __init__(self, event: Event) -> None:
        self._event = event
        self._event_id = _string(event.id)
        self._tenant = _string(event.tenant)
        self._json = event.model_dump_json().encode()

    def to(self, delivery_id: str, subscription_id: str, *, recheck: bool) -> Routed:
        body = b"".join((
            b'{"delivery_id":', _string(delivery_id), b',"event_id":', self._event_id,
            b',"tenant":', self._tenant, b',"subscription_id":', _string(subscription_id),
            b',"attempt":1,"event":', self._json, b',"first_attempt_at":null,"replay":false}',
        ))  # fmt: skip
        return Routed(delivery_id, self._event, body, recheck)


def _string(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
