"""Subscriptions: create (idempotently), list, read, change and delete.

A subscription created with a tenant key starts `pending_verification` and Hookline runs
the verification handshake at once; the answer shows the status it reached.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from common import signing
from common.db.models import Subscription
from hookline.api.auth import SUBSCRIPTIONS_READ, SUBSCRIPTIONS_WRITE, Principal, require
from hookline.api.cursor import oldest_first
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented
from hookline.api.schemas import SubscriptionStatus
from hookline.api.service_calls import ServiceRoute, acting, outbound, reaching_endpoint
from hookline.api.subscription_schemas import (
    HandshakeOut,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionOut,
    SubscriptionUpdate,
)
from hookline.services import subscriptions
from hookline.services.audit import Actor

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"], route_class=ServiceRoute)
NO_STORE = {"Cache-Control": "no-store"}
CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"model": SubscriptionCreated, "description": "Created; the secret is shown once"},
    200: {"model": SubscriptionOut, "description": "Already subscribed: the existing one"},
    **documented(401, 403, 409, 413, 422, 429, 503),
}


def to_out(row: Subscription, services: Services) -> SubscriptionOut:
    public = None
    if row.signing_key_enc:
        public = signing.public_key(services.secret_box.open(row.signing_key_enc))
    return SubscriptionOut(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        event_types=row.event_types,
        operations=row.operations,
        filter=row.payload_filter,
        header_names=sorted(row.headers),
        description=row.description,
        metadata=row.meta,
        rate_limit_per_s=row.rate_limit_per_s,
        max_in_flight=row.max_in_flight,
        propagate_trace=row.propagate_trace,
        status=cast(SubscriptionStatus, row.status),
        disabled_reason=row.disabled_reason,
        public_key=public,
        verified_at=row.verified_at,
        previous_secret_expires_at=row.previous_secret_expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def created_or_existing(
    services: Services, tenant_id: str, body: SubscriptionCreate, *, actor: Actor, verified: bool
) -> JSONResponse:
    """201 with the secret for a new subscription, 200 without it for an existing one."""
    row, secret, outcome = subscriptions.subscribe(
        services.sessionmaker, tenant_id, body,
        actor=actor, verified=verified, outbound=outbound(services),
    )  # fmt: skip
    out = to_out(row, services)
    if secret is None:
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    if outcome is None:
        handshake = HandshakeOut(status="not_run", reason=None)
    else:
        handshake = HandshakeOut(
            status="passed" if outcome.verified else "failed", reason=outcome.detail
        )
    created = SubscriptionCreated(**out.model_dump(), secret=secret, verification=handshake)
    return JSONResponse(created.model_dump(mode="json"), status_code=201, headers=NO_STORE)


@router.post("", status_code=201, response_model=None, responses=CREATE_RESPONSES)
async def create_subscription(
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
    A tenant with as many handshakes in progress as its limit gets 429; one with as many
    subscriptions as its `max_subscriptions` gets 409 `limit_reached`.
    """
    actor = acting(request, principal)
    call = partial(created_or_existing, services, principal.tenant_id, body, actor=actor,
                   verified=False)  # fmt: skip
    return await reaching_endpoint(services, principal.tenant_id, call)


@router.get("", response_model=SubscriptionList, responses=documented(401, 403, 422, 503))
def list_subscriptions(
    limit: int = Query(default=100, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=1000),
    status: SubscriptionStatus | None = Query(default=None),
    principal: Principal = Depends(require(SUBSCRIPTIONS_READ)),
    services: Services = Depends(get_services),
) -> SubscriptionList:
    """The tenant's subscriptions, oldest first, a page at a time."""
    query = subscriptions.of_tenant(principal.tenant_id, status)
    with services.sessionmaker() as session:
        page, next_cursor = oldest_first(session, query, Subscription, limit, cursor)
    return SubscriptionList(data=[to_out(row, services) for row in page], next_cursor=next_cursor)


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
    with services.sessionmaker() as session:
        row = subscriptions.get(session, principal.tenant_id, subscription_id)
    return to_out(row, services)


@router.patch(
    "/{subscription_id}",
    response_model=SubscriptionOut,
    responses=documented(401, 403, 404, 409, 413, 422, 429, 503),
)
async def update_subscription(
    subscription_id: str,
    body: SubscriptionUpdate,
    request: Request,
    principal: Principal = Depends(require(SUBSCRIPTIONS_WRITE)),
    services: Services = Depends(get_services),
) -> SubscriptionOut:
    """Change the fields present in the body. A new URL is checked, and the subscription
    goes back to `pending_verification` until the new endpoint passes the handshake
    (which counts against the tenant's handshake limit: 429 at the limit)."""
    changes = body.model_dump(exclude_unset=True)
    call = partial(
        subscriptions.change, services.sessionmaker, principal.tenant_id, subscription_id,
        changes, actor=acting(request, principal), outbound=outbound(services),
    )  # fmt: skip
    if changes.get("url") is None:
        row = await run_in_threadpool(call)  # nothing to reach: a plain change
    else:
        row = await reaching_endpoint(services, principal.tenant_id, call)
    return to_out(row, services)


@router.delete("/{subscription_id}", status_code=204, responses=documented(401, 403, 404, 422, 503))
def delete_subscription(
    subscription_id: str,
    request: Request,
    principal: Principal = Depends(require(SUBSCRIPTIONS_WRITE)),
    services: Services = Depends(get_services),
) -> Response:
    """Delete a subscription: nothing more is routed to it. Its deliveries stay readable."""
    with services.sessionmaker() as session, session.begin():
        subscriptions.delete(
            session, principal.tenant_id, subscription_id, actor=acting(request, principal)
        )
    return Response(status_code=204)
