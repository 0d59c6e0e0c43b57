"""What an operator does with poison messages: purge them, or send one back after a fix.
One rule and one audit row each, whether `POST /v1/dead-letters/poison/...` or `hookline
dlq` in its direct mode asked. Draining, listing and publishing are the dispatcher's
(`dispatcher.deadletters`); deciding to drop or re-send is the operator's, so it is here."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.db.models import PoisonMessage
from common.transport import Transport
from dispatcher.deadletters import PoisonFilter, purge_poison, resubmit_poison
from dispatcher.replay import audit
from hookline.services.deadletters import Purged, refuse_unnamed


def purge(
    session: Session,
    poison: PoisonFilter,
    *,
    actor: str,
    everything: bool,
    dry_run: bool,
    by_tenant_key: bool = False,
) -> Purged:
    """Count, and unless `dry_run` delete, the poison messages `poison` selects; the caller
    drained `hookline.poison` first, and commits."""
    refuse_unnamed(poison, everything=everything, by_tenant_key=by_tenant_key)
    matched = session.scalar(
        select(func.count()).select_from(PoisonMessage).where(*poison.conditions())
    )
    if dry_run or not matched:
        return Purged(matched or 0, 0, dry_run)
    purged = purge_poison(session, poison)
    audit(
        session,
        actor=actor,
        tenant_id=poison.tenant,
        action="dlq.purge",
        resource_type="poison_messages",
        resource_id=None,
        details={"purged": purged, "tenant": poison.tenant, "reason": "poison"},
    )
    return Purged(matched, purged, dry_run)


def resubmit(
    session: Session,
    transport: Transport,
    row: PoisonMessage,
    *,
    body: bytes | None,
    actor: str,
    publish_timeout_s: float,
    shards: int,
) -> None:
    """Publish the message, or the corrected `body`, back to the queue it came from (a
    delivery: to its tenant's shard, of `shards`) (confirmed; `ResubmitError` for a queue
    it cannot go back to), then mark and audit it. Who may send which body is the
    caller's check; the caller commits."""
    resubmit_poison(
        session, transport, row, body=body, publish_timeout_s=publish_timeout_s, shards=shards
    )
    audit(
        session,
        actor=actor,
        tenant_id=row.tenant_id,
        action="poison.resubmit",
        resource_type="poison_message",
        resource_id=row.id,
        details={"source_queue": row.source_queue, "corrected": body is not None},
    )
