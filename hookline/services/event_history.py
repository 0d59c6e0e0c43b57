"""Stored events, for lists: a tenant's events newest first, and each one's deliveries
counted by status. What `GET /v1/events` and the portal share.

Pages go by (received_at, id), newest first: `ix_events_tenant_received_id` serves the
plain list and the time range, `ix_events_tenant_type_received_id` the type filter, and the
id prefix reads `ix_events_tenant_id_pattern` (a `varchar_pattern_ops` index on
PostgreSQL, whose default collation cannot serve `LIKE 'x%'`). The counts are one grouped
query over the page's ids on the deliveries' (tenant_id, event_id, subscription_id, day)
key, on the page's days only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.orm import Session

from common.db.models import Delivery, EventRow


def page_query(
    tenant_id: str,
    *,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    id_prefix: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> Select[tuple[EventRow]]:
    """The query for one page of the tenant's events (plus one row, to tell whether another
    page follows); `since`/`until` bound the time Hookline stored the event."""
    query = select(EventRow).where(EventRow.tenant_id == tenant_id)
    if event_type is not None:
        query = query.where(EventRow.type == event_type)
    if since is not None:
        query = query.where(EventRow.received_at >= since)
    if until is not None:
        query = query.where(EventRow.received_at < until)
    if id_prefix:
        # Event ids hold no `%` or `\\`; `_` is escaped. The exact comparison too, because
        # SQLite's LIKE ignores case.
        pattern = id_prefix.replace("_", "\\_") + "%"
        query = query.where(
            EventRow.id.like(pattern, escape="\\"),
            func.substr(EventRow.id, 1, len(id_prefix)) == id_prefix,
        )
    if after is not None:  # the position of the previous page's last row
        received_at, last_id = after
        query = query.where(tuple_(EventRow.received_at, EventRow.id) < (received_at, last_id))
    return query.order_by(EventRow.received_at.desc(), EventRow.id.desc()).limit(limit + 1)


def delivery_counts(
    session: Session, tenant_id: str, events: Iterable[EventRow]
) -> dict[str, dict[str, int]]:
    """event id -> {status: deliveries of the event in that status} (no entry: none yet).
    Read on the page's days only: an event's deliveries live on its day."""
    page = list(events)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    if not page:
        return counts
    rows = session.execute(
        select(Delivery.event_id, Delivery.status, func.count())
        .where(
            Delivery.tenant_id == tenant_id,
            Delivery.event_id.in_([row.id for row in page]),
            Delivery.day.in_(sorted({row.day for row in page})),
        )
        .group_by(Delivery.event_id, Delivery.status)
    )
    for event_id, status, count in rows:
        counts[event_id][status] = count
    return counts
