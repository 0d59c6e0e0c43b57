"""The replay copy of a dead delivery, and the id lists a replay batch is selected by."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, String, and_, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from common.db.models import Delivery, EventRow
from common.transport import Outgoing
from common.transport import topology as tp
from common.wire import DeliveryMessage, Event, encode

H_REPLAY_JOB = "x-hookline-replay-job"


def among(column: Any, ids: Sequence[str], *, postgres: bool) -> ColumnElement[bool]:
    """`column IN ids`; on PostgreSQL as `= ANY(array)`: one parameter whatever the batch
    size, so the statement is planned once instead of once per distinct size."""
    if postgres:
        return column == any_(bindparam("ids", list(ids), type_=ARRAY(String)))  # type: ignore[no-any-return]
    return column.in_(ids)  # type: ignore[no-any-return]


def copies(
    session: Session, ids: Sequence[str], job_id: str, selected: ColumnElement[bool]
) -> tuple[list[Outgoing], list[str]]:
    """One `replay=True` copy per delivery (attempt 1, same delivery and event, so the same
    `webhook-id`); the ids whose event no longer exists come back as missing."""
    rows = (
        session.execute(
            select(
                Delivery.id,
                Delivery.subscription_id,
                EventRow.tenant_id,
                EventRow.id,
                EventRow.type,
                EventRow.operation,
                EventRow.timestamp,
                EventRow.data,
            )
            .join(
                EventRow,
                and_(EventRow.tenant_id == Delivery.tenant_id, EventRow.id == Delivery.event_id),
            )
            .where(selected)
        )
        .tuples()
        .all()
    )
    headers = {H_REPLAY_JOB: job_id}
    out = []
    for delivery_id, subscription_id, tenant, event_id, type_, operation, at, data in rows:
        event = Event(
            tenant=tenant, id=event_id, type=type_, operation=operation, timestamp=at, data=data
        )
        message = DeliveryMessage(
            delivery_id=delivery_id,
            event_id=event_id,
            tenant=tenant,
            subscription_id=subscription_id,
            attempt=1,
            event=event,
            replay=True,
        )
        body = encode(message)
        out.append(Outgoing(tp.DELIVERIES, tp.DELIVERY_ROUTING_KEY, body, headers, delivery_id))
    found = {m.message_id for m in out}
    return out, [i for i in ids if i not in found]
