"""`GET /v1/events`: the tenant's stored events, newest first, each with its deliveries
counted by status (`hookline.services.event_history`; plans in docs/architecture.md)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Query
from pydantic import StringConstraints

from common.wire import EVENT_ID_PATTERN
from hookline.api.auth import DELIVERIES_READ, Principal, require
from hookline.api.catalogue_schemas import EventList, EventListItem
from hookline.api.cursor import decode_position, encode_position
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented
from hookline.api.schemas import DeliveryStatus, EventType, Instant
from hookline.services import event_history

router = APIRouter(prefix="/v1/events", tags=["events"])
IdPrefix = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=EVENT_ID_PATTERN)]


@router.get("", response_model=EventList, responses=documented(400, 401, 403, 422, 429, 503))
def list_events(
    event_type: EventType | None = Query(default=None, description="Only this type."),
    since: Instant | None = Query(default=None, description="stored at or after"),
    until: Instant | None = Query(default=None, description="stored before"),
    id_prefix: IdPrefix | None = Query(default=None, description="Ids that start with this."),
    limit: int = Query(default=100, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=1000),
    principal: Principal = Depends(require(DELIVERIES_READ)),
    services: Services = Depends(get_services),
) -> EventList:
    """The tenant's events as the router stored them, newest first, without their data
    (`GET /v1/events/{id}` has it), with how many deliveries are in each status."""
    tenant_id = principal.tenant_id
    query = event_history.page_query(
        tenant_id, event_type=event_type, since=since, until=until, id_prefix=id_prefix,
        after=decode_position(cursor) if cursor else None, limit=limit,
    )  # fmt: skip
    with services.sessionmaker() as session:
        rows = list(session.scalars(query))
        page, more = rows[:limit], len(rows) > limit
        counts = event_history.delivery_counts(session, tenant_id, page)
    data = [
        EventListItem(
            id=row.id,
            type=row.type,
            operation=row.operation,
            timestamp=row.timestamp,
            received_at=row.received_at,
            deliveries={cast(DeliveryStatus, s): n for s, n in counts.get(row.id, {}).items()},
        )
        for row in page
    ]
    next_cursor = encode_position(page[-1].received_at, page[-1].id) if more else None
    return EventList(data=data, next_cursor=next_cursor)
