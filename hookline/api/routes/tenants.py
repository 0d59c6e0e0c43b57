"""Tenant management for the operator (admin token): tenants, their API keys, and
subscriptions registered on a receiver's behalf (pre-verified: the seed's "client mode")."""

from __future__ import annotations

from functools import partial
from typing import Annotated, cast

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select

from common.db.models import ApiKey, Tenant
from hookline.api.auth import require_admin
from hookline.api.cursor import oldest_first
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented
from hookline.api.routes.subscriptions import CREATE_RESPONSES, created_or_existing
from hookline.api.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyOut,
    ScopeName,
    TenantCreate,
    TenantCreated,
    TenantList,
    TenantOut,
)
from hookline.api.service_calls import ServiceRoute, admin, reaching_endpoint
from hookline.api.subscription_schemas import AdminSubscriptionCreate, SubscriptionCreate
from hookline.services import tenants

router = APIRouter(
    prefix="/v1/tenants",
    tags=["tenants"],
    dependencies=[Depends(require_admin)],
    responses=documented(401, 403, 413, 422, 503),
    route_class=ServiceRoute,
)
# Responses that carry a key in clear must not linger in caches.
NO_STORE = {"Cache-Control": "no-store"}


def key_out(row: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        scopes=[cast(ScopeName, scope) for scope in row.scopes],
        allowed_cidrs=row.allowed_cidrs,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@router.post("", status_code=201, response_model=TenantCreated)
def create_tenant(
    body: TenantCreate,
    request: Request,
    response: Response,
    services: Services = Depends(get_services),
) -> TenantCreated:
    """Create a tenant and its first API key, which holds every scope."""
    with services.sessionmaker() as session, session.begin():
        tenant, key = tenants.create_tenant(session, body.name, actor=admin(request))
    response.headers.update(NO_STORE)
    return TenantCreated(id=tenant.id, name=tenant.name, api_key=key)


@router.get("", response_model=TenantList)
def list_tenants(
    limit: int = Query(default=100, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=1000),
    services: Services = Depends(get_services),
) -> TenantList:
    """Every tenant, oldest first, a page at a time."""
    with services.sessionmaker() as session:
        page, next_cursor = oldest_first(session, select(Tenant), Tenant, limit, cursor)
    return TenantList(
        data=[TenantOut(id=t.id, name=t.name, created_at=t.created_at) for t in page],
        next_cursor=next_cursor,
    )


@router.get("/{tenant_id}", response_model=TenantOut, responses=documented(404))
def get_tenant(tenant_id: str, services: Services = Depends(get_services)) -> TenantOut:
    """One tenant."""
    with services.sessionmaker() as session:
        tenant = tenants.get(session, tenant_id)
    return TenantOut(id=tenant.id, name=tenant.name, created_at=tenant.created_at)


@router.post(
    "/{tenant_id}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=documented(404),
)
def create_api_key(
    tenant_id: str,
    request: Request,
    response: Response,
    body: Annotated[ApiKeyCreate | None, Body()] = None,
    services: Services = Depends(get_services),
) -> ApiKeyCreated:
    """Issue another API key for a tenant; without `scopes` it may only send events
    (`events:write`), and without `allowed_cidrs` it may be used from anywhere. The key is
    shown only in this response; only its hash is stored."""
    with services.sessionmaker() as session, session.begin():
        row, key = tenants.issue_key(
            session, tenant_id, body or ApiKeyCreate(), actor=admin(request)
        )
        out = ApiKeyCreated(**key_out(row).model_dump(), api_key=key)
    response.headers.update(NO_STORE)
    return out


@router.get("/{tenant_id}/api-keys", response_model=ApiKeyList, responses=documented(404, 422))
def list_api_keys(
    tenant_id: str,
    limit: int = Query(default=100, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=1000),
    services: Services = Depends(get_services),
) -> ApiKeyList:
    """A tenant's keys (revoked ones too), oldest first, a page at a time, by prefix and
    scopes; never the keys themselves."""
    with services.sessionmaker() as session:
        tenants.get(session, tenant_id)
        page, next_cursor = oldest_first(session, tenants.keys_of(tenant_id), ApiKey, limit, cursor)
    return ApiKeyList(data=[key_out(row) for row in page], next_cursor=next_cursor)


@router.delete(
    "/{tenant_id}/api-keys/{key_id}", response_model=ApiKeyOut, responses=documented(404)
)
def revoke_api_key(
    tenant_id: str, key_id: str, request: Request, services: Services = Depends(get_services)
) -> ApiKeyOut:
    """Revoke a key: every request with it is refused from now on (revoking twice is fine)."""
    with services.sessionmaker() as session, session.begin():
        out = key_out(tenants.revoke_key(session, tenant_id, key_id, actor=admin(request)))
    # After the commit, so a concurrent lookup cannot cache the key as it was.
    services.key_cache.forget(key_id)
    return out


@router.post(
    "/{tenant_id}/subscriptions",
    status_code=201,
    response_model=None,
    responses={**CREATE_RESPONSES, **documented(404)},
)
async def create_tenant_subscription(
    tenant_id: str,
    body: AdminSubscriptionCreate,
    request: Request,
    services: Services = Depends(get_services),
) -> JSONResponse:
    """Register a subscription on a tenant's behalf. It starts active (the operator vouches
    for the endpoint) unless `verify` asks for the handshake first. Either way the URL is
    checked (its name looked up) on the handshake gate, under the tenant's limit. A tenant
    at its `max_subscriptions` gets none (409 `limit_reached`): raise the limit first."""
    await run_in_threadpool(_exists, services, tenant_id)
    fields = body.model_dump(exclude={"verify"})
    call = partial(
        created_or_existing, services, tenant_id, SubscriptionCreate(**fields),
        actor=admin(request), verified=not body.verify,
    )  # fmt: skip
    return await reaching_endpoint(services, tenant_id, call)


def _exists(services: Services, tenant_id: str) -> None:
    with services.sessionmaker() as session:
        tenants.get(session, tenant_id)
