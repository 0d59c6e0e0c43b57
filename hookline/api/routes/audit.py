"""The audit log: every change made through the API or the CLI, newest first.

`GET /v1/audit-log` is the operator's (admin token, every tenant); `GET /v1/audit` is a
tenant's own (an API key with `audit:read`; only entries of the key's tenant)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from common.db.models import AuditEntry
from hookline.api.auth import AUDIT_READ, Principal, require, require_admin
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented
from hookline.api.history_schemas import AuditEntryOut, AuditList
from hookline.api.schemas import TimeBound

router = APIRouter(tags=["audit"], responses=documented(401, 403, 422, 503))


MAX_ENTRY_ID = 2**63 - 1  # the id column is a bigint


def _after(cursor: str) -> int:
    # ASCII digits ("²" is a digit to str.isdigit, not to int()) within the bigint column:
    # 9999999999999999999 was a 500 from the driver binding it.
    if cursor.isascii() and cursor.isdigit() and len(cursor) <= 19:
        entry_id = int(cursor)
        if entry_id <= MAX_ENTRY_ID:
            return entry_id
    raise ApiError(422, "invalid_cursor", "cursor is not one this API returned")


class _Filters:
    """The query parameters both audit routes take."""

    def __init__(
        self,
        action: str | None = Query(default=None, max_length=64),
        actor: str | None = Query(default=None, max_length=64),
        since: TimeBound | None = Query(default=None),
        until: TimeBound | None = Query(default=None),
        limit: int = Query(default=100, ge=1, le=500),
        cursor: str | None = Query(default=None, max_length=32),
    ) -> None:
        self.action, self.actor = action, actor
        self.since: datetime | None = since
        self.until: datetime | None = until
        self.limit, self.cursor = limit, cursor


def _page(services: Services, tenant_id: str | None, wanted: _Filters) -> AuditList:
    query = select(AuditEntry)
    if tenant_id is not None:
        query = query.where(AuditEntry.tenant_id == tenant_id)
    if wanted.action is not None:
        query = query.where(AuditEntry.action == wanted.action)
    if wanted.actor is not None:
        query = query.where(AuditEntry.actor == wanted.actor)
    if wanted.since is not None:
        query = query.where(AuditEntry.at >= wanted.since)
    if wanted.until is not None:
        query = query.where(AuditEntry.at < wanted.until)
    if wanted.cursor is not None:
        query = query.where(AuditEntry.id < _after(wanted.cursor))
    limit = wanted.limit
    with services.sessionmaker() as session:
        rows = list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    return AuditList(
        data=[AuditEntryOut.model_validate(row, from_attributes=True) for row in page],
        next_cursor=str(page[-1].id) if more else None,
    )


@router.get("/v1/audit-log", response_model=AuditList, dependencies=[Depends(require_admin)])
def list_audit_log(
    tenant_id: str | None = Query(default=None, max_length=64),
    wanted: _Filters = Depends(),
    services: Services = Depends(get_services),
) -> AuditList:
    """Who changed what, when and from where; filter by tenant, action, actor and time."""
    return _page(services, tenant_id, wanted)


@router.get("/v1/audit", response_model=AuditList)
def list_own_audit_log(
    wanted: _Filters = Depends(),
    principal: Principal = Depends(require(AUDIT_READ)),
    services: Services = Depends(get_services),
) -> AuditList:
    """The calling tenant's own audit log (a key with `audit:read`): who changed its
    tenant's keys, subscriptions and replays, when and from where."""
    return _page(services, principal.tenant_id, wanted)
