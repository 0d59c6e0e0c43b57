"""A tenant's catalogue settings, for the operator (admin token): how ingest treats data
that breaks a catalogued schema, and whether subscriptions must name catalogued types.
(Per-tenant API limits are another resource: `/v1/tenants/{tenant_id}/limits`.)"""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Depends, Request

from common.db.models import TenantSettings
from hookline.api.auth import require_admin
from hookline.api.catalogue_schemas import (
    SchemaValidationMode,
    TenantSettingsOut,
    TenantSettingsUpdate,
)
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented
from hookline.api.service_calls import ServiceRoute, admin
from hookline.services import tenant_settings

router = APIRouter(
    prefix="/v1/tenants/{tenant_id}/settings",
    tags=["tenants"],
    dependencies=[Depends(require_admin)],
    responses=documented(400, 401, 403, 404, 422, 429, 503),
    route_class=ServiceRoute,
)


def to_out(row: TenantSettings) -> TenantSettingsOut:
    return TenantSettingsOut(
        tenant_id=row.tenant_id,
        schema_validation=cast(SchemaValidationMode, row.schema_validation),
        require_catalogued_types=row.require_catalogued_types,
        updated_at=row.updated_at,
    )


@router.get("", response_model=TenantSettingsOut)
def get_tenant_settings(
    tenant_id: str, services: Services = Depends(get_services)
) -> TenantSettingsOut:
    """A tenant's settings (the defaults until the first change)."""
    with services.sessionmaker() as session:
        return to_out(tenant_settings.get(session, tenant_id))


@router.patch("", response_model=TenantSettingsOut, responses=documented(413))
def update_tenant_settings(
    tenant_id: str,
    body: TenantSettingsUpdate,
    request: Request,
    services: Services = Depends(get_services),
) -> TenantSettingsOut:
    """Change the settings present in the body. Ingest in this process follows at once,
    in the other API processes within `HOOKLINE_CATALOGUE_REFRESH_S`."""
    changes = body.model_dump(exclude_unset=True)
    with services.sessionmaker() as session, session.begin():
        out = to_out(tenant_settings.change(session, tenant_id, changes, actor=admin(request)))
    services.schema_check.forget(tenant_id)
    return out
