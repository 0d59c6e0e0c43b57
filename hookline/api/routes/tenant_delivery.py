"""A tenant's delivery settings, for the operator (admin token): its fair share of
delivery (architecture §3). A route of its own, beside the tenant's API limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, StrictInt

from common.db.models import Tenant
from hookline.api.auth import require_admin
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented
from hookline.api.schemas import Strict
from hookline.api.service_calls import ServiceRoute, admin
from hookline.services import tenant_delivery, tenants

router = APIRouter(
    prefix="/v1/tenants",
    tags=["tenants"],
    dependencies=[Depends(require_admin)],
    responses=documented(401, 403, 404, 413, 422, 503),
    route_class=ServiceRoute,
)

Share = Annotated[
    StrictInt | None,  # `false` is not 0
    Field(
        ge=0,
        le=1_000_000,
        description="Deliveries per second routed to the tenant's own delivery shard (per "
        "router process) before the rest spill to the overflow shard; null: the deployment's "
        "default (HOOKLINE_DELIVERY_SHARE_PER_S); 0: never spill.",
    ),
]


class TenantDeliveryUpdate(Strict):
    delivery_share_per_s: Share


class TenantDelivery(BaseModel):
    tenant_id: str
    delivery_share_per_s: Share
    effective_share_per_s: int = Field(description="What routers apply (0: never spill).")


def _out(tenant: Tenant, default: int) -> TenantDelivery:
    share = tenant.delivery_share_per_s
    return TenantDelivery(
        tenant_id=tenant.id,
        delivery_share_per_s=share,
        effective_share_per_s=default if share is None else share,
    )


@router.get("/{tenant_id}/delivery", response_model=TenantDelivery)
def get_tenant_delivery(
    tenant_id: str, services: Services = Depends(get_services)
) -> TenantDelivery:
    """The tenant's delivery settings."""
    with services.sessionmaker() as session:
        tenant = tenants.get(session, tenant_id)
    return _out(tenant, services.settings.delivery_share_per_s)


@router.put("/{tenant_id}/delivery", response_model=TenantDelivery)
def put_tenant_delivery(
    tenant_id: str,
    body: TenantDeliveryUpdate,
    request: Request,
    services: Services = Depends(get_services),
) -> TenantDelivery:
    """Set the tenant's delivery share; routers apply it within their refresh interval."""
    with services.sessionmaker() as session, session.begin():
        tenant = tenant_delivery.set_share(
            session, tenant_id, body.delivery_share_per_s, actor=admin(request)
        )
        out = _out(tenant, services.settings.delivery_share_per_s)
    return out
