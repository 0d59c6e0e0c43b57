"""Deliveries: one event to one subscription, with every HTTP attempt made for it.

The list is newest first and pages by (created_at, id), with the portal's delivery log's
filters (`hookline/services/delivery_log.py`, where the indexes that serve them are named),
so a page costs the same on a table of millions as on an empty one.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from fastapi import APIRouter, Depends, Query
from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session

from common.db import lookup
from common.db.models import Attempt, Delivery
from hookline.api.auth import DELIVERIES_READ, Principal, require
from hookline.api.cursor import decode_position, encode_position
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented, not_found
from hookline.api.history_schemas import (
    AttemptOut,
    DeliveryList,
    DeliveryOut,
    DeliverySummary,
    SentHeader,
)
from hookline.api.schemas import DeliveryStatus, EventType, TimeBound
from hookline.services import deliveries, delivery_log
from hookline.services.deliveries import Sent
from hookline.services.delivery_log import LogFilter

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])
READ = Depends(require(DELIVERIES_READ))


def attempt_out(row: Attempt, headers: Sent | None = None) -> AttemptOut:
    """An attempt with the request headers it sent (`deliveries.attempt_headers`), if any."""
    return AttemptOut(
        attempt=row.attempt,
        outcome=row.outcome,
        status_code=row.status_code,
        duration_s=row.duration_s,
        error=row.error,
        response_body=row.response_body,
        created_at=row.created_at,
        request_headers=None
        if headers is None
        else [SentHeader(name=name, value=value) for name, value in headers],
    )


def attempts_out(session: Session, delivery: Delivery, rows: list[Attempt]) -> list[AttemptOut]:
    """Each attempt with its request headers, masked as the portal shows them."""
    sent = deliveries.attempt_headers(session, delivery, rows)
    return [attempt_out(row, sent.get(row.id)) for row in rows]


def summary(row: Delivery) -> DeliverySummary:
    return DeliverySummary(
        id=row.id,
        event_id=row.event_id,
        webhook_id=row.webhook_id,
        subscription_id=row.subscription_id,
        event_type=row.event_type,
        status=cast(DeliveryStatus, row.status),
        attempt_count=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        dead_reason=row.dead_reason,
        replay_count=row.replay_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def delivery_page(
    tenant_id: str,
    *,
    status: str | None = None,
    subscription_id: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Select[tuple[Delivery]]:
    """The query for one page (plus one row, to tell whether another page follows)."""
    filters = LogFilter(status, event_type, subscription_id, since, until)
    query = delivery_log.filtered(tenant_id, None, filters)
    if cursor is not None:
        created_at, last_id = decode_position(cursor)
        query = query.where(tuple_(Delivery.created_at, Delivery.id) < (created_at, last_id))
    return delivery_log.newest_first(query, limit)


@router.get("", response_model=DeliveryList, responses=documented(401, 403, 422, 503))
def list_deliveries(
    status: DeliveryStatus | None = Query(default=None),
    subscription_id: str | None = Query(default=None, max_length=64),
    event_type: EventType | None = Query(default=None),
    since: TimeBound | None = Query(default=None, description="created at or after"),
    until: TimeBound | None = Query(default=None, description="created before"),
    limit: int = Query(default=100, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=1000),
    principal: Principal = READ,
    services: Services = Depends(get_services),
) -> DeliveryList:
    """The tenant's deliveries, newest first, filtered and a page at a time."""
    query = delivery_page(
        principal.tenant_id, status=status, subscription_id=subscription_id,
        event_type=event_type, since=since, until=until, cursor=cursor, limit=limit,
    )  # fmt: skip
    with services.sessionmaker() as session:
        rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_position(page[-1].created_at, page[-1].id) if more else None
    return DeliveryList(data=[summary(row) for row in page], next_cursor=next_cursor)


@router.get(
    "/{delivery_id}", response_model=DeliveryOut, responses=documented(401, 403, 404, 422, 503)
)
def get_delivery(
    delivery_id: str,
    principal: Principal = READ,
    services: Services = Depends(get_services),
) -> DeliveryOut:
    """One delivery of the tenant and its attempts, oldest first."""
    with services.sessionmaker() as session:
        row = lookup.delivery(session, delivery_id, Delivery.tenant_id == principal.tenant_id)
        if row is None:
            raise not_found("delivery")
        attempts = attempts_out(session, row, lookup.attempts(session, row.id))
    return DeliveryOut(**summary(row).model_dump(), attempts=attempts)
