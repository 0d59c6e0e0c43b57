"""A tenant's API limits, for the operator (admin token): read them, and set or clear the
tenant's own values over the deployment's defaults.

A change applies at once in the API process that took it and within `LimitBook.TTL_S`
(5 s) in the others; the shared counters keep their current window.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request

from common.db.models import TenantApiLimits
from common.settings import Settings
from hookline.api.auth import require_admin
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented
from hookline.api.limit_schemas import LimitOverrides, LimitValues, TenantLimitsOut
from hookline.api.service_calls import ServiceRoute, admin
from hookline.services import limits

router = APIRouter(
    prefix="/v1/tenants/{tenant_id}/limits",
    tags=["tenants"],
    dependencies=[Depends(require_admin)],
    responses=documented(401, 403, 404, 413, 422, 503),
    route_class=ServiceRoute,
)


def limits_out(tenant_id: str, row: TenantApiLimits | None, settings: Settings) -> TenantLimitsOut:
    return TenantLimitsOut(
        tenant_id=tenant_id,
        effective=LimitValues(**asdict(limits.effective(row, settings))),
        overrides=LimitOverrides(**limits.overrides(row)),
        defaults=LimitValues(**asdict(limits.defaults(settings))),
        updated_at=row.updated_at if row else None,
    )


@router.get("", response_model=TenantLimitsOut)
def get_tenant_limits(
    tenant_id: str, services: Services = Depends(get_services)
) -> TenantLimitsOut:
    """The tenant's API limits: in force, its own values, and the defaults."""
    with services.sessionmaker() as session:
        return limits_out(tenant_id, limits.read(session, tenant_id), services.settings)


@router.patch("", response_model=TenantLimitsOut)
def change_tenant_limits(
    tenant_id: str,
    body: LimitOverrides,
    request: Request,
    services: Services = Depends(get_services),
) -> TenantLimitsOut:
    """Set the limits present in the body for this tenant; null puts one back to the
    default. Audited (`tenant.limits_changed`)."""
    changes = body.model_dump(exclude_unset=True)
    with services.sessionmaker() as session, session.begin():
        row = limits.change(session, tenant_id, changes, actor=admin(request))
        out = limits_out(tenant_id, row, services.settings)
    services.limits.forget(tenant_id)  # after the commit: a reload sees the new values
    return out
