"""A tenant's delivery settings (fair delivery, architecture §3): its own share of delivery
per second before the rest spills to the overflow shard. Kept apart from the API's own
per-tenant limits, which live on the same row.

The caller owns the transaction. Routers pick a change up within their refresh interval.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from common.db.models import Tenant
from hookline.services import audit
from hookline.services.audit import Actor
from hookline.services.tenants import get


def set_share(session: Session, tenant_id: str, share_per_s: int | None, *, actor: Actor) -> Tenant:
    """Set (or with None, clear back to the default) the tenant's delivery share."""
    tenant = get(session, tenant_id)
    before = tenant.delivery_share_per_s
    tenant.delivery_share_per_s = share_per_s
    audit.record(
        session, actor, action="tenant.delivery_updated",
        resource_type="tenant", resource_id=tenant_id, tenant_id=tenant_id,
        details={"delivery_share_per_s": share_per_s, "before": before},
    )  # fmt: skip
    return tenant
