"""A tenant's API limits: what it may ask of the API, the operator's overrides over the
`HOOKLINE_TENANT_*` defaults, read and changed with the same rules by the admin routes.

Each function takes the caller's session; the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.db.models import Subscription, Tenant, TenantApiLimits
from common.db.ratewindow import Window
from common.settings import Settings
from common.wire import utcnow
from hookline.services import audit
from hookline.services.audit import Actor
from hookline.services.errors import AtLimit, NotFound

# Override name -> the Settings field that is its default.
DEFAULTS = {
    "ingest_rate_per_s": "tenant_ingest_rate_per_s",
    "max_batch_events": "tenant_max_batch_events",
    "max_handshakes": "tenant_max_handshakes",
    "replay_rate_per_s": "replay_max_rate_per_s",
    "replay_starts_per_min": "tenant_replay_starts_per_min",
    "max_subscriptions": "tenant_max_subscriptions",
    "requests_per_s": "tenant_requests_per_s",
    "max_concurrent_requests": "tenant_max_concurrent_requests",
}


@dataclass(frozen=True)
class Limits:
    """The limits in force for one tenant."""

    ingest_rate_per_s: float
    max_batch_events: int
    max_handshakes: int
    replay_rate_per_s: float
    replay_starts_per_min: int
    max_subscriptions: int
    requests_per_s: float
    max_concurrent_requests: int

    @cached_property
    def ingest_window(self) -> Window:
        """`ingest_rate_per_s` as shared windows (worked out once: ingest asks every time)."""
        return Window.per_second(self.ingest_rate_per_s)

    @cached_property
    def requests_window(self) -> Window:
        """`requests_per_s` as shared windows (every other request asks), claimed a fifth
        at a time: at the default 100/s, a twentieth (5 units) made every fifth request
        wait for a claim's UPDATE, 2-3 ms more at p99 (docs/benchmarks.md, session 21)."""
        return Window.per_second(self.requests_per_s, chunk_fraction=0.2)


def defaults(settings: Settings) -> Limits:
    return Limits(**{name: getattr(settings, field) for name, field in DEFAULTS.items()})


def overrides(row: TenantApiLimits | None) -> dict[str, Any]:
    """The tenant's own values (None: the default)."""
    return {name: getattr(row, name) if row else None for name in DEFAULTS}


def effective(row: TenantApiLimits | None, settings: Settings) -> Limits:
    base = defaults(settings)
    own = overrides(row)
    values = {f.name: getattr(base, f.name) if own[f.name] is None else own[f.name]
              for f in fields(Limits)}  # fmt: skip
    return Limits(**values)


def read(session: Session, tenant_id: str) -> TenantApiLimits | None:
    """The tenant's overrides row (None: every limit is the default); NotFound without the
    tenant."""
    if session.get(Tenant, tenant_id) is None:
        raise NotFound("tenant")
    return session.get(TenantApiLimits, tenant_id)


def change(
    session: Session, tenant_id: str, changes: dict[str, Any], *, actor: Actor
) -> TenantApiLimits:
    """Set the limits named in `changes` (a null value: back to the default); audited."""
    row = read(session, tenant_id)
    if row is None:
        row = TenantApiLimits(tenant_id=tenant_id)
        session.add(row)
    before = overrides(row)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    audit.record(
        session, actor, action="tenant.limits_changed",
        resource_type="tenant", resource_id=tenant_id, tenant_id=tenant_id,
        details={"before": {k: before[k] for k in changes}, "after": changes},
    )  # fmt: skip
    return row


def room_for_subscription(session: Session, tenant_id: str, settings: Settings) -> None:
    """Refuse a new subscription past the tenant's `max_subscriptions`. Every event of the
    tenant is written and sent once per subscription it matches, by the routers all tenants
    share, so the count bounds what one event of it costs them. The tenant's row is locked
    first, so that two concurrent requests cannot both take the last place (PostgreSQL;
    SQLite writes one transaction at a time anyway)."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    cap = effective(session.get(TenantApiLimits, tenant_id), settings).max_subscriptions
    count = (
        select(func.count()).select_from(Subscription).where(Subscription.tenant_id == tenant_id)
    )
    held = session.scalar(count) or 0
    if held >= cap:
        raise AtLimit(
            f"this tenant has {held} subscriptions and may have {cap}: delete one it no "
            "longer needs, or ask the operator to raise max_subscriptions"
        )
