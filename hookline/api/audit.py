"""The audit log: one row per change made through the API, in the change's transaction.

Who is the API key id (or `admin` for the operator's token), what is a dotted action
(`subscription.created`) on a resource, when is the database clock of the change, and from
where is the connecting address. Details never hold secrets: only names of what changed.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from common.db.models import AuditEntry
from common.wire import utcnow
from hookline.api.auth import Principal, client_ip

ADMIN = "admin"
CLI = "cli"  # changes made with `hookline tenant ...` on the operator's shell


def record(
    session: Session,
    request: Request | None,
    *,
    actor: str | Principal,
    action: str,
    resource_type: str,
    resource_id: str | None,
    tenant_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit row to `session`; it commits (or rolls back) with the change."""
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=actor.key_id if isinstance(actor, Principal) else actor,
            tenant_id=tenant_id,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            source_ip=client_ip(request) if request is not None else None,
            details=details or {},
        )
    )
