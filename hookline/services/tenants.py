"""Tenants and their API keys: a tenant with its first key, and issuing, listing and
revoking keys, with the same rules and audit for the admin routes and `hookline tenant`.

Each function takes the caller's session; the caller commits. A revocation reaches other
API processes through their key caches; the caller that owns one forgets the key after the
commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from common.db.models import ApiKey, Tenant
from common.wire import utcnow
from hookline.api.schemas import ApiKeyCreate
from hookline.services import audit
from hookline.services.audit import CLI, Actor
from hookline.services.errors import NotFound
from hookline.services.keys import issue_key as new_key
from hookline.services.keys import new_tenant


def create_tenant(session: Session, name: str, *, actor: Actor) -> tuple[Tenant, str]:
    """A new tenant and its first key (every scope), the key in clear."""
    tenant, key = new_tenant(session, name)
    # `hookline tenant create` has never written an audit row; issue 13 moves code only.
    if actor.id != CLI:
        audit.record(
            session, actor, action="tenant.created",
            resource_type="tenant", resource_id=tenant.id, tenant_id=tenant.id,
            details={"name": name},
        )  # fmt: skip
    return tenant, key


def get(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    return tenant


def issue_key(
    session: Session, tenant_id: str, spec: ApiKeyCreate, *, actor: Actor
) -> tuple[ApiKey, str]:
    """Another key for the tenant; only its hash is stored, the key in clear is returned."""
    get(session, tenant_id)
    scopes = list(dict.fromkeys(spec.scopes))
    row, key = new_key(session, tenant_id, scopes, name=spec.name, allowed_cidrs=spec.allowed_cidrs)
    details: dict[str, Any] = {"scopes": scopes, "allowed_cidrs": spec.allowed_cidrs}
    if actor.id == CLI:
        # The shell's row has always named the scopes alone; issue 13 moves code only.
        details = {"scopes": list(spec.scopes)}
    audit.record(
        session, actor, action="api_key.created",
        resource_type="api_key", resource_id=row.id, tenant_id=tenant_id, details=details,
    )  # fmt: skip
    return row, key


def keys_of(tenant_id: str) -> Select[tuple[ApiKey]]:
    """The query for a tenant's keys (revoked ones too), for paging."""
    return select(ApiKey).where(ApiKey.tenant_id == tenant_id)


def list_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    """Every key of the tenant, oldest first (none for an unknown tenant)."""
    return list(session.scalars(keys_of(tenant_id).order_by(ApiKey.created_at)))


def revoke_key(session: Session, tenant_id: str, key_id: str, *, actor: Actor) -> ApiKey:
    """Revoke the tenant's key (revoking twice is fine, and audited once)."""
    row = session.scalars(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
    ).first()
    if row is None:
        raise NotFound("API key")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(
            session, actor, action="api_key.revoked",
            resource_type="api_key", resource_id=row.id, tenant_id=tenant_id,
        )  # fmt: skip
    return row
