"""The portal's control plane: mint and revoke links to the receivers' portal, and set a
tenant's portal theme. A tenant's key with `portal:mint` acts for its own tenant; the admin
token names the tenant (`tenant_id`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from hookline.api.auth import client_ip
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented
from hookline.api.opsauth import Caller, caller
from hookline.api.public_url import public_base
from hookline.api.schemas import Strict
from hookline.api.service_calls import ServiceRoute
from hookline.services import portal_links, portal_themes
from hookline.services.audit import Actor

PORTAL_MINT = "portal:mint"
router = APIRouter(prefix="/v1/portal", tags=["portal"], route_class=ServiceRoute)
MINT = Depends(caller(PORTAL_MINT))
NO_STORE = {"Cache-Control": "no-store"}
TenantId = Field(default=None, max_length=64, description="Admin token only: whose portal")


class PortalLinkCreate(Strict):
    tenant_id: str | None = TenantId
    scope: Literal["read", "manage"] = "read"
    expires_in_s: int = Field(default=portal_links.DEFAULT_TTL_S, ge=60, le=portal_links.MAX_TTL_S)
    subscription_ids: list[str] = Field(
        default_factory=list,
        max_length=portal_links.MAX_SUBSCRIPTIONS,
        description="Only these endpoints (a customer's); empty: every endpoint of the tenant",
    )


class PortalLinkOut(Strict):
    id: str
    tenant_id: str
    scope: str
    subscription_ids: list[str]
    expires_at: datetime
    revoked_at: datetime | None = None


class PortalLinkCreated(PortalLinkOut):
    url: str = Field(description="Open once in a browser; shown only in this response")


class PortalTheme(Strict):
    tenant_id: str | None = TenantId
    name: str | None = Field(default=None, max_length=portal_themes.MAX_NAME_CHARS)
    logo_url: str | None = Field(default=None, max_length=portal_themes.MAX_URL_CHARS)
    primary_color: str | None = Field(default=None, max_length=7, examples=["#1f6feb"])
    frame_ancestors: list[str] = Field(
        default_factory=list,
        max_length=portal_themes.MAX_ANCESTORS,
        description="Origins that may frame the portal; empty: none may",
    )


def _tenant(who: Caller, requested: str | None) -> str:
    tenant = who.tenant(requested)
    if tenant is None:
        raise ApiError(422, "validation_error", "tenant_id: required with the admin token")
    return tenant


def _actor(request: Request, who: Caller) -> Actor:
    return Actor(who.actor, client_ip(request))


@router.post(
    "/links", status_code=201, response_model=PortalLinkCreated,
    responses=documented(401, 403, 404, 422, 503),
)  # fmt: skip
def create_portal_link(
    body: PortalLinkCreate,
    request: Request,
    who: Caller = MINT,
    services: Services = Depends(get_services),
) -> JSONResponse:
    """A link to the receivers' portal for one tenant (or some of its endpoints), valid
    for `expires_in_s` (at most 24 h) and opened once."""
    tenant = _tenant(who, body.tenant_id)
    with services.sessionmaker() as session, session.begin():
        row, token = portal_links.mint(
            session, tenant, scope=body.scope, ttl_s=body.expires_in_s,
            subscription_ids=body.subscription_ids, actor=_actor(request, who),
        )  # fmt: skip
        out = PortalLinkCreated(
            id=row.id, tenant_id=row.tenant_id, scope=row.scope,
            subscription_ids=row.subscription_ids, expires_at=row.expires_at,
            url=f"{public_base(request, services.settings)}/portal/open?token={token}",
        )  # fmt: skip
    return JSONResponse(out.model_dump(mode="json"), status_code=201, headers=NO_STORE)


@router.delete(
    "/links/{link_id}", response_model=PortalLinkOut, responses=documented(401, 403, 404, 422, 503)
)
def revoke_portal_link(
    link_id: str,
    request: Request,
    tenant_id: str | None = Query(default=None, max_length=64),
    who: Caller = MINT,
    services: Services = Depends(get_services),
) -> PortalLinkOut:
    """Revoke a link, and end the session it opened (revoking twice is fine)."""
    tenant = _tenant(who, tenant_id)
    with services.sessionmaker() as session, session.begin():
        row = portal_links.revoke(session, tenant, link_id, actor=_actor(request, who))
        return PortalLinkOut(
            id=row.id, tenant_id=row.tenant_id, scope=row.scope,
            subscription_ids=row.subscription_ids, expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )  # fmt: skip


@router.put("/theme", response_model=PortalTheme, responses=documented(401, 403, 404, 422, 503))
def put_portal_theme(
    body: PortalTheme,
    request: Request,
    who: Caller = MINT,
    services: Services = Depends(get_services),
) -> PortalTheme:
    """The portal's name, logo (https), primary colour (`#rrggbb`) and the origins allowed
    to frame it (CSP `frame-ancestors`; none by default)."""
    tenant = _tenant(who, body.tenant_id)
    theme = portal_themes.check(
        name=body.name, logo_url=body.logo_url,
        primary_color=body.primary_color, frame_ancestors=body.frame_ancestors,
    )  # fmt: skip
    with services.sessionmaker() as session, session.begin():
        portal_themes.put(session, tenant, theme, actor=_actor(request, who))
    return PortalTheme(
        tenant_id=tenant, name=theme.name, logo_url=theme.logo_url,
        primary_color=theme.primary_color, frame_ancestors=list(theme.frame_ancestors),
    )  # fmt: skip
