"""Tenant management for the operator (admin token): tenants and their API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response

from common.db.models import Tenant
from hookline.api.auth import issue_key, new_tenant, require_admin
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented, not_found
from hookline.api.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    TenantCreate,
    TenantCreated,
)

router = APIRouter(
    prefix="/v1/tenants",
    tags=["tenants"],
    dependencies=[Depends(require_admin)],
    responses=documented(401, 403, 413, 422, 503),
)
# Responses that carry a key in clear must not linger in caches.
NO_STORE = {"Cache-Control": "no-store"}


@router.post("", status_code=201, response_model=TenantCreated)
def create_tenant(
    body: TenantCreate, response: Response, services: Services = Depends(get_services)
) -> TenantCreated:
    """Create a tenant and its first API key, which holds every scope."""
    with services.sessionmaker() as session, session.begin():
        tenant, key = new_tenant(session, body.name)
    response.headers.update(NO_STORE)
    return TenantCreated(id=tenant.id, name=tenant.name, api_key=key)


@router.post(
    "/{tenant_id}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=documented(404),
)
def create_api_key(
    tenant_id: str,
    response: Response,
    body: Annotated[ApiKeyCreate | None, Body()] = None,
    services: Services = Depends(get_services),
) -> ApiKeyCreated:
    """Issue another API key for a tenant; without a body it holds every scope."""
    scopes = list(dict.fromkeys((body or ApiKeyCreate()).scopes))
    with services.sessionmaker() as session, session.begin():
        if session.get(Tenant, tenant_id) is None:
            raise not_found("tenant")
        row, key = issue_key(session, tenant_id, scopes)
    response.headers.update(NO_STORE)
    return ApiKeyCreated(id=row.id, api_key=key, scopes=scopes)
