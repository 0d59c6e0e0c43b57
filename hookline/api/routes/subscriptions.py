"""Subscriptions: create (idempotently), list, read, change and delete.

A subscription created with a tenant key starts `pending_verification` and Hookline runs
the verification handshake at once; the answer shows the status it reached.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from common.db.models import SUB_PENDING, Subscription
from common.wire import utcnow
from hookline.api import audit, subscribing
from hookline.api.auth import SUBSCRIPTIONS_READ, SUBSCRIPTIONS_WRITE, Principal, require
from hookline.api.cursor import oldest_first
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented, not_found
from hookline.api.schemas import SubscriptionStatus
from hookline.api.subscription_schemas import (
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionOut,
    SubscriptionUpdate,
)

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
NO_STORE = {"Cache-Control": "no-store"}
CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"model": SubscriptionCreated, "description": "Created; the secret is shown once"},
    200: {"model": SubscriptionOut, "description": "Already subscribed: the existing one"},
    **documented(401, 403, 409, 413, 422, 503),
}


def created_or_existing(
    services: Services, request: Request, tenant_id: str, body: SubscriptionCreate,
    *, actor: subscribing.Actor, verified: bool,
) -> JSONResponse:  # fmt: skip
    row, secret = subscribing.create(
        services, request, tenant_id, body, actor=actor, verified=verified
    )
    if row.status == SUB_PENDING:
        subscribing.verify(services, request, row, actor=actor)
        row = subscribing.reload(services, row.id)
    out = subscribing.to_out(row, services)
    if secret is None:
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    created = SubscriptionCreated(**out.model_dump(), secret=secret)
    return JSONResponse(created.model_dump(mode="json"), status_code=201, headers=NO_STORE)


@router.post("", status_code=201, response_model=None, responses=CREATE_RESPONSES)
def create_subscription(
    body: SubscriptionCreate,
    request: Request,
    principal: Principal = Depends(require(SUBSCRIPTIONS_WRITE)),
    services: Services = Depends(get_services),
) -> JSONResponse:
    """Subscribe a URL to event types (and, optionally, operations and a payload filter).

    The subscription starts `pending_verification`, and Hookline POSTs the verification
    challenge to the URL right away; the answer shows whether it became `active`
    (otherwise fix the endpoint and call `POST /v1/subscriptions/{id}/verify`).

    The same URL, event types and operations again answer 200 with the existing
    subscription, unchanged and without its secret (a pending one is verified again).
    """
    return created_or_existing(
        services, request, principal.tenant_id, body, actor=principal, verified=False
    )


@router.get("", response_model=SubscriptionList, responses=documented(401, 403, 422, 503))
def list_subscriptions(
    limit: int = Query(default=100, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=1000),
    status: SubscriptionStatus | None = Query(default=None),
    principal: Principal = Depends(require(SUBSCRIPTIONS_READ)),
    services: Services = Depends(get_services),
) -> SubscriptionList:
    """The tenant's subscriptions, oldest first, a page at a time."""
    query = select(Subscription).where(Subscription.tenant_id == principal.tenant_id)
    if status is not None:
        query = query.where(Subscription.status == status)
    with services.sessionmaker() as session:
        page, next_cursor = oldest_first(session, query, Subscription, limit, cursor)
    return SubscriptionList(
        data=[subscribing.to_out(row, services) for row in page], next_cursor=next_cursor
    )


@router.get(
    "/{subscription_id}",
    response_model=SubscriptionOut,
    responses=documented(401, 403, 404, 422, 503),
)
def get_subscription(
    subscription_id: str,
    principal: Principal = Depends(require(SUBSCRIPTIONS_READ)),
    services: Services = Depends(get_services),
) -> SubscriptionOut:
    """One subscription of the tenant (without its secret)."""
    query = select(Subscription).where(
        Subscription.id == subscription_id, Subscription.tenant_id == principal.tenant_id
    )
    with services.sessionmaker() as session:
        row = session.scalars(query).first()
    if row is None:
        raise not_found("subscription")
    return subscribing.to_out(row, services)


@router.patch(
    "/{subscription_id}",
    response_model=SubscriptionOut,
    responses=documented(401, 403, 404, 409, 413, 422, 503),
)
def update_subscription(
    subscription_id: str,
    body: SubscriptionUpdate,
    request: Request,
    principal: Principal = Depends(require(SUBSCRIPTIONS_WRITE)),
    services: Services = Depends(get_services),
) -> SubscriptionOut:
    """Change the fields present in the body. A new URL is checked, and the subscription
    goes back to `pending_verification` until the new endpoint passes the handshake."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("headers"):  # values are sealed at rest, like secrets
        changes["headers"] = services.secret_box.seal_values(changes["headers"])
    if body.url is not None:
        subscribing.check_target(services, body.url)
    for name in ("event_types", "url"):
        if name in changes and changes[name] is None:
            raise ApiError(422, "validation_error", f"{name} cannot be null")
    try:
        with services.sessionmaker() as session, session.begin():
            row = subscribing.owned(session, principal.tenant_id, subscription_id)
            moved = body.url is not None and body.url != row.url
            _apply(row, changes)
            if moved:
                row.status, row.verified_at = SUB_PENDING, None
            row.updated_at = utcnow()
            audit.record(
                session, request, actor=principal, action="subscription.updated",
                resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
                details={"fields": sorted(changes)},
            )  # fmt: skip
    except IntegrityError:
        raise ApiError(
            409, "conflict", "another subscription has this url, event types and operations"
        ) from None
    if moved:
        subscribing.verify(services, request, row, actor=principal)
        row = subscribing.reload(services, row.id)
    return subscribing.to_out(row, services)


def _apply(row: Subscription, changes: dict[str, Any]) -> None:
    simple = {
        "headers": "headers", "filter": "payload_filter", "description": "description",
        "metadata": "meta", "rate_limit_per_s": "rate_limit_per_s",
        "max_in_flight": "max_in_flight", "url": "url",
    }  # fmt: skip
    for field, column in simple.items():
        if field in changes:
            value = changes[field]
            if field in ("headers", "metadata") and value is None:
                value = {}
            setattr(row, column, value)
    if "event_types" in changes:
        row.event_types = sorted(set(changes["event_types"]))
    if "operations" in changes:
        row.operations = sorted(set(changes["operations"] or []))
    row.dedupe_key = subscribing.dedupe_key(row.url, row.event_types, row.operations)


@router.delete("/{subscription_id}", status_code=204, responses=documented(401, 403, 404, 422, 503))
def delete_subscription(
    subscription_id: str,
    request: Request,
    principal: Principal = Depends(require(SUBSCRIPTIONS_WRITE)),
    services: Services = Depends(get_services),
) -> Response:
    """Delete a subscription: nothing more is routed to it. Its deliveries stay readable."""
    with services.sessionmaker() as session, session.begin():
        row = subscribing.owned(session, principal.tenant_id, subscription_id)
        session.delete(row)
        audit.record(
            session, request, actor=principal, action="subscription.deleted",
            resource_type="subscription", resource_id=subscription_id,
            tenant_id=principal.tenant_id, details={"url": row.url},
        )  # fmt: skip
    return Response(status_code=204)
