"""The event-type catalogue: a tenant's own (`/v1/event-types`, API keys with
`event_types:read` / `event_types:write`) and the operator's view of any tenant's
(`/v1/tenants/{tenant_id}/event-types`, admin token). Domain rules live in
`hookline.services.event_types`; a change drops this process's compiled validators of the
tenant at once (other API processes notice within `HOOKLINE_CATALOGUE_REFRESH_S`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response

from common.db.models import EventTypeEntry
from hookline.api.auth import EVENT_TYPES_READ, EVENT_TYPES_WRITE, Principal, require, require_admin
from hookline.api.catalogue_schemas import (
    EventTypeCreate,
    EventTypeList,
    EventTypeOut,
    EventTypeUpdate,
    GroupName,
)
from hookline.api.cursor import oldest_first
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented
from hookline.api.schemas import EventType
from hookline.api.service_calls import ServiceRoute, acting, admin
from hookline.services import event_types
from hookline.services.audit import Actor
from hookline.services.tenants import get as get_tenant

router = APIRouter(prefix="/v1/event-types", tags=["event types"], route_class=ServiceRoute)
admin_router = APIRouter(
    prefix="/v1/tenants/{tenant_id}/event-types",
    tags=["event types"],
    dependencies=[Depends(require_admin)],
    route_class=ServiceRoute,
)
READ = Depends(require(EVENT_TYPES_READ))
WRITE = Depends(require(EVENT_TYPES_WRITE))
# 429: the per-tenant API limits answer it on every route.
LIST_ERRORS = documented(400, 401, 403, 422, 429, 503)
ONE_ERRORS = documented(400, 401, 403, 404, 422, 429, 503)
WRITE_ERRORS = documented(400, 401, 403, 404, 409, 413, 422, 429, 503)


def to_out(row: EventTypeEntry) -> EventTypeOut:
    return EventTypeOut(
        id=row.id, tenant_id=row.tenant_id, name=row.name, description=row.description,
        group=row.group, data_schema=row.data_schema, examples=row.examples,
        deprecated=row.deprecated, version=row.version, created_at=row.created_at,
        updated_at=row.updated_at,
    )  # fmt: skip


def _create(services: Services, tenant_id: str, body: EventTypeCreate, actor: Actor) -> Response:
    with services.sessionmaker() as session, session.begin():
        out = to_out(event_types.create(session, tenant_id, body, actor=actor))
    services.schema_check.forget(tenant_id)
    return Response(out.model_dump_json(), status_code=201, media_type="application/json")


def _list(
    services: Services, tenant_id: str, *, group: str | None, deprecated: bool | None,
    name_prefix: str | None, limit: int, cursor: str | None, known: bool = True,
) -> EventTypeList:  # fmt: skip
    query = event_types.of_tenant(
        tenant_id, group=group, deprecated=deprecated, name_prefix=name_prefix
    )
    with services.sessionmaker() as session:
        if not known:
            get_tenant(session, tenant_id)
        page, next_cursor = oldest_first(session, query, EventTypeEntry, limit, cursor)
    return EventTypeList(data=[to_out(row) for row in page], next_cursor=next_cursor)


def _get(services: Services, tenant_id: str, name: str) -> EventTypeOut:
    with services.sessionmaker() as session:
        return to_out(event_types.get(session, tenant_id, name))


def _change(
    services: Services, tenant_id: str, name: str, body: EventTypeUpdate, actor: Actor
) -> EventTypeOut:
    changes = body.model_dump(exclude_unset=True)
    with services.sessionmaker() as session, session.begin():
        out = to_out(event_types.change(session, tenant_id, name, changes, actor=actor))
    services.schema_check.forget(tenant_id)
    return out


def _delete(services: Services, tenant_id: str, name: str, actor: Actor) -> Response:
    with services.sessionmaker() as session, session.begin():
        event_types.delete(session, tenant_id, name, actor=actor)
    services.schema_check.forget(tenant_id)
    return Response(status_code=204)


GROUP = Query(default=None, description="Only this group.")
DEPRECATED = Query(default=None, description="Only deprecated (true) or current (false) types.")
PREFIX = Query(default=None, max_length=200, description="Only names that start with this.")
LIMIT = Query(default=100, ge=1, le=500)
CURSOR = Query(default=None, max_length=1000)


@router.post("", status_code=201, response_model=EventTypeOut, responses=WRITE_ERRORS)
def create_event_type(
    body: EventTypeCreate, request: Request, principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> Response:  # fmt: skip
    """Add an event type to the catalogue, with an optional JSON Schema for its `data` and
    examples checked against it. A name already catalogued answers 409."""
    return _create(services, principal.tenant_id, body, acting(request, principal))


@router.get("", response_model=EventTypeList, responses=LIST_ERRORS)
def list_event_types(
    group: GroupName | None = GROUP, deprecated: bool | None = DEPRECATED,
    name_prefix: str | None = PREFIX, limit: int = LIMIT, cursor: str | None = CURSOR,
    principal: Principal = READ, services: Services = Depends(get_services),
) -> EventTypeList:  # fmt: skip
    """The tenant's catalogue, oldest first, filtered and a page at a time."""
    return _list(
        services, principal.tenant_id, group=group, deprecated=deprecated,
        name_prefix=name_prefix, limit=limit, cursor=cursor,
    )  # fmt: skip


@router.get("/{event_type_name}", response_model=EventTypeOut, responses=ONE_ERRORS)
def get_event_type(
    event_type_name: EventType, principal: Principal = READ,
    services: Services = Depends(get_services),
) -> EventTypeOut:  # fmt: skip
    """One catalogued event type, with its schema and examples."""
    return _get(services, principal.tenant_id, event_type_name)


@router.patch("/{event_type_name}", response_model=EventTypeOut, responses=WRITE_ERRORS)
def update_event_type(
    event_type_name: EventType, body: EventTypeUpdate, request: Request,
    principal: Principal = WRITE, services: Services = Depends(get_services),
) -> EventTypeOut:  # fmt: skip
    """Change the fields present. A new schema must accept the examples kept."""
    return _change(services, principal.tenant_id, event_type_name, body, acting(request, principal))


@router.delete("/{event_type_name}", status_code=204, responses=ONE_ERRORS)
def delete_event_type(
    event_type_name: EventType, request: Request, principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> Response:  # fmt: skip
    """Remove an event type: its events are accepted unchecked from now on."""
    return _delete(services, principal.tenant_id, event_type_name, acting(request, principal))


@admin_router.post("", status_code=201, response_model=EventTypeOut, responses=WRITE_ERRORS)
def create_tenant_event_type(
    tenant_id: str, body: EventTypeCreate, request: Request,
    services: Services = Depends(get_services),
) -> Response:  # fmt: skip
    """Add an event type to a tenant's catalogue (the operator)."""
    return _create(services, tenant_id, body, admin(request))


@admin_router.get("", response_model=EventTypeList, responses=ONE_ERRORS)
def list_tenant_event_types(
    tenant_id: str, group: GroupName | None = GROUP, deprecated: bool | None = DEPRECATED,
    name_prefix: str | None = PREFIX, limit: int = LIMIT, cursor: str | None = CURSOR,
    services: Services = Depends(get_services),
) -> EventTypeList:  # fmt: skip
    """A tenant's catalogue (the operator)."""
    return _list(
        services, tenant_id, group=group, deprecated=deprecated, name_prefix=name_prefix,
        limit=limit, cursor=cursor, known=False,
    )  # fmt: skip


@admin_router.get("/{event_type_name}", response_model=EventTypeOut, responses=ONE_ERRORS)
def get_tenant_event_type(
    tenant_id: str, event_type_name: EventType, services: Services = Depends(get_services)
) -> EventTypeOut:
    """One event type of a tenant's catalogue (the operator)."""
    return _get(services, tenant_id, event_type_name)


@admin_router.patch("/{event_type_name}", response_model=EventTypeOut, responses=WRITE_ERRORS)
def update_tenant_event_type(
    tenant_id: str, event_type_name: EventType, body: EventTypeUpdate, request: Request,
    services: Services = Depends(get_services),
) -> EventTypeOut:  # fmt: skip
    """Change an event type of a tenant's catalogue (the operator)."""
    return _change(services, tenant_id, event_type_name, body, admin(request))


@admin_router.delete("/{event_type_name}", status_code=204, responses=ONE_ERRORS)
def delete_tenant_event_type(
    tenant_id: str, event_type_name: EventType, request: Request,
    services: Services = Depends(get_services),
) -> Response:  # fmt: skip
    """Remove an event type from a tenant's catalogue (the operator)."""
    return _delete(services, tenant_id, event_type_name, admin(request))
