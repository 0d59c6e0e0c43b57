"""The delivery log: a tenant's deliveries newest first, filtered, a page at a time, for the
API's `GET /v1/deliveries` and the portal's log.

Pages go by keyset on (created_at, id), never by OFFSET: a page starts after (older than)
or before (newer than) the position of a row of the page the reader comes from, so page
100 costs what page 1 does and rows that arrive between pages neither repeat nor vanish.
`ix_deliveries_tenant_created_id`, `..._tenant_type_created_id`,
`..._tenant_status_created` and `..._subscription_created` serve each filter (EXPLAIN in
docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from common.db.models import Delivery

PAGE_SIZE = 50

Position = tuple[datetime, str]  # (created_at, id) of a row


@dataclass(frozen=True)
class LogFilter:
    status: str | None = None
    event_type: str | None = None
    subscription_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class LogPage:
    rows: list[Delivery]
    older: Position | None  # pass as `after` for the next page; None: this is the last
    newer: Position | None  # pass as `before` for the previous page; None: the first


def scoped(query: Select[Any], tenant_id: str, allowed: Collection[str] | None) -> Select[Any]:
    """`query` limited to the tenant's deliveries and, if given, to those subscriptions."""
    query = query.where(Delivery.tenant_id == tenant_id)
    if allowed is not None:
        query = query.where(Delivery.subscription_id.in_(sorted(allowed)))
    return query


def filtered(
    tenant_id: str, allowed: Collection[str] | None, filters: LogFilter
) -> Select[tuple[Delivery]]:
    """The deliveries the filters match, unordered (`since` inclusive, `until` exclusive)."""
    query = scoped(select(Delivery), tenant_id, allowed)
    if filters.status:
        query = query.where(Delivery.status == filters.status)
    if filters.event_type:
        query = query.where(Delivery.event_type == filters.event_type)
    if filters.subscription_id:
        query = query.where(Delivery.subscription_id == filters.subscription_id)
    if filters.since:
        query = query.where(Delivery.created_at >= filters.since)
    if filters.until:
        query = query.where(Delivery.created_at < filters.until)
    return query


def newest_first(query: Select[tuple[Delivery]], limit: int) -> Select[tuple[Delivery]]:
    """A page of `query` newest first, plus one row to tell whether another page follows."""
    return query.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit + 1)


def _position(row: Delivery) -> Position:
    return row.created_at, row.id


def log_page(
    session: Session,
    tenant_id: str,
    allowed: Collection[str] | None,
    filters: LogFilter,
    *,
    limit: int = PAGE_SIZE,
    after: Position | None = None,
    before: Position | None = None,
) -> LogPage:
    """The newest `limit` matches older than `after`, or the oldest `limit` newer than
    `before` (newest first either way); neither: the newest matches."""
    query = filtered(tenant_id, allowed, filters)
    key = tuple_(Delivery.created_at, Delivery.id)
    if before is not None:
        ascending = query.where(key > before).order_by(Delivery.created_at, Delivery.id)
        rows = list(session.scalars(ascending.limit(limit + 1)))
        if len(rows) > limit:  # more above this page: it is a page in the middle
            page = rows[:limit][::-1]
            return LogPage(page, older=_position(page[-1]), newer=_position(page[0]))
        # Back at the top: show the newest page, full, as if the reader started there.
        after = None
    elif after is not None:
        query = query.where(key < after)
    rows = list(session.scalars(newest_first(query, limit)))
    page = rows[:limit]
    return LogPage(
        page,
        older=_position(page[-1]) if len(rows) > limit else None,
        newer=_position(page[0]) if after is not None and page else None,
    )
