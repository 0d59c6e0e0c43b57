"""The audit log, for the operator: every change made through the API, newest first."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from common.db.models import AuditEntry
from hookline.api.auth import require_admin
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented
from hookline.api.schemas import AuditEntryOut, AuditList, Instant

router = APIRouter(
    prefix="/v1/audit-log",
    tags=["audit"],
    dependencies=[Depends(require_admin)],
    responses=documented(401, 403, 422, 503),
)


def _after(cursor: str) -> int:
    if not cursor.isdigit() or len(cursor) > 19:
        raise ApiError(422, "invalid_cursor", "cursor is not one this API returned")
    return int(cursor)


@router.get("", response_model=AuditList)
def list_audit_log(
    tenant_id: str | None = Query(default=None, max_length=64),
    action: str | None = Query(default=None, max_length=64),
    actor: str | None = Query(default=None, max_length=64),
    since: Instant | None = Query(default=None),
    until: Instant | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=32),
    services: Services = Depends(get_services),
) -> AuditList:
    """Who changed what, when and from where; filter by tenant, action, actor and time."""
    query = select(AuditEntry)
    if tenant_id is not None:
        query = query.where(AuditEntry.tenant_id == tenant_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if cursor is not None:
        query = query.where(AuditEntry.id < _after(cursor))
    with services.sessionmaker() as session:
        rows = list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    return AuditList(
        data=[AuditEntryOut.model_validate(row, from_attributes=True) for row in page],
        next_cursor=str(page[-1].id) if more else None,
    )
