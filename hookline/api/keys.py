"""API key management for the CLI, with the same rules and audit as the admin routes."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import ApiKey, Tenant
from common.wire import utcnow
from hookline.api import audit
from hookline.api.auth import issue_key
from hookline.api.errors import problems
from hookline.api.schemas import ApiKeyCreate


def create_key_from_cli(
    sessions: sessionmaker[Session],
    tenant_id: str,
    scopes: Sequence[str] | None,
    cidrs: Sequence[str] | None,
    name: str | None,
) -> tuple[str, str]:
    """(key id, key in clear); `ValueError` with the reason for bad input."""
    fields: dict[str, object] = {"allowed_cidrs": list(cidrs or []), "name": name}
    if scopes:
        fields["scopes"] = list(scopes)
    try:
        spec = ApiKeyCreate.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(problems(exc.errors())) from None
    with sessions() as session, session.begin():
        if session.get(Tenant, tenant_id) is None:
            raise ValueError(f"no tenant {tenant_id}")
        row, key = issue_key(
            session, tenant_id, spec.scopes, name=spec.name, allowed_cidrs=spec.allowed_cidrs
        )
        audit.record(
            session, None, actor=audit.CLI, action="api_key.created", resource_type="api_key",
            resource_id=row.id, tenant_id=tenant_id, details={"scopes": list(spec.scopes)},
        )  # fmt: skip
        return row.id, key


def list_keys(sessions: sessionmaker[Session], tenant_id: str) -> list[ApiKey]:
    with sessions() as session:
        query = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
        return list(session.scalars(query))


def revoke_key(sessions: sessionmaker[Session], tenant_id: str, key_id: str) -> bool:
    with sessions() as session, session.begin():
        row = session.scalars(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
        ).first()
        if row is None:
            return False
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            audit.record(
                session, None, actor=audit.CLI, action="api_key.revoked",
                resource_type="api_key", resource_id=row.id, tenant_id=tenant_id,
            )  # fmt: skip
        return True
