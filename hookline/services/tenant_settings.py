"""A tenant's catalogue settings: how ingest treats data that breaks a schema, and whether
subscriptions must name catalogued event types. A tenant without a row has the defaults
(`off`, not required); the first change writes the row.

Each function takes the caller's session; the caller commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from common.db.models import TenantSettings
from common.db.statuses import SchemaValidation
from common.wire import utcnow
from hookline.services import audit
from hookline.services.audit import Actor
from hookline.services.errors import Invalid
from hookline.services.tenants import get as get_tenant

FIELDS = ("schema_validation", "require_catalogued_types")


def defaults(tenant_id: str) -> TenantSettings:
    """The settings of a tenant that never changed them (not added to any session)."""
    return TenantSettings(
        tenant_id=tenant_id,
        schema_validation=SchemaValidation.OFF,
        require_catalogued_types=False,
    )


def get(session: Session, tenant_id: str) -> TenantSettings:
    """The tenant's settings (its defaults when it has no row); `NotFound` for no tenant."""
    get_tenant(session, tenant_id)
    return of(session, tenant_id)


def of(session: Session, tenant_id: str) -> TenantSettings:
    """The settings, without checking that the tenant exists (the hot paths' read)."""
    return session.get(TenantSettings, tenant_id) or defaults(tenant_id)


def change(
    session: Session, tenant_id: str, changes: dict[str, Any], *, actor: Actor
) -> TenantSettings:
    """Apply the fields in `changes` (null fields are refused: there is no 'unset')."""
    get_tenant(session, tenant_id)
    if any(changes.get(name, False) is None for name in FIELDS):
        raise Invalid("settings cannot be null; send the value to set")
    row = session.get(TenantSettings, tenant_id, with_for_update=True)
    if row is None:
        row = defaults(tenant_id)
        session.add(row)
    for name in FIELDS:
        if name in changes:
            setattr(row, name, changes[name])
    row.updated_at = utcnow()
    audit.record(
        session, actor, action="tenant.settings_updated", resource_type="tenant",
        resource_id=tenant_id, tenant_id=tenant_id, details=dict(changes),
    )  # fmt: skip
    return row
