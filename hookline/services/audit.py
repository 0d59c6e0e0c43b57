"""The audit log: one row per change made through the API or the CLI, in the change's
transaction.

Who is the API key id (or `admin` for the operator's token, `cli` for the operator's shell),
what is a dotted action (`subscription.created`) on a resource, when is the database clock of
the change, and from where is the connecting address. Details never hold secrets: only names
of what changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from common.db.models import AuditEntry
from common.db.session import rowcount, until_short
from common.wire import utcnow

ADMIN = "admin"
CLI = "cli"  # changes made with `hookline tenant ...` on the operator's shell


@dataclass(frozen=True)
class Actor:
    """Who makes a change, and from which address (None on the shell)."""

    id: str
    source_ip: str | None = None


def record(
    session: Session,
    actor: Actor,
    *,
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
            actor=actor.id,
            tenant_id=tenant_id,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            source_ip=actor.source_ip,
            details=details or {},
        )
    )


def delete_before(session_for: Callable[[], Session], cutoff: datetime, batch_size: int) -> int:
    """Delete the entries older than `cutoff`, oldest first, a batch per transaction (the
    operator's `hookline gc --audit-older-than`); how many went."""
    oldest = (
        select(AuditEntry.id).where(AuditEntry.at < cutoff).order_by(AuditEntry.at)
        .limit(batch_size)
    )  # fmt: skip

    def one_batch() -> int:
        with session_for() as session, session.begin():
            return rowcount(
                session.execute(
                    delete(AuditEntry)
                    .where(AuditEntry.id.in_(oldest.scalar_subquery()))
                    .execution_options(synchronize_session=False)
                )
            )

    return until_short(one_batch, batch_size)
