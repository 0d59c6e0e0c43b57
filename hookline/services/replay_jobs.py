"""Replay jobs, for lists: a tenant's own, or (the operator) every tenant's, newest first.
Running, cancelling and reading one job stay with `dispatcher.replay`; this is the list the
routes and the portal share. `ix_replay_jobs_tenant_created` serves a tenant's page,
`ix_replay_jobs_created_id` the operator's across tenants."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, select, tuple_

from common.db.models import ReplayJob


def page_query(
    tenant_id: str | None,
    *,
    state: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> Select[tuple[ReplayJob]]:
    """One page (plus one row) of the jobs of `tenant_id`, or of every tenant for None."""
    query = select(ReplayJob)
    if tenant_id is not None:
        query = query.where(ReplayJob.tenant_id == tenant_id)
    if state is not None:
        query = query.where(ReplayJob.state == state)
    if after is not None:  # the position of the previous page's last row
        created_at, last_id = after
        query = query.where(tuple_(ReplayJob.created_at, ReplayJob.id) < (created_at, last_id))
    return query.order_by(ReplayJob.created_at.desc(), ReplayJob.id.desc()).limit(limit + 1)
