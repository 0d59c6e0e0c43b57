"""Subscriptions: an endpoint URL and the event types (and operations) it wants.

Subscribing is idempotent: the same URL, event types and operations identify one
subscription per tenant, so a receiver or a deploy script may subscribe on every start.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import cast

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common import signing, ssrf
from common.db.models import SUB_ACTIVE, Subscription
from common.errors import UnsafeTargetError
from common.wire import new_id, utcnow
from hookline.api.auth import SUBSCRIPTIONS_READ, SUBSCRIPTIONS_WRITE, Principal, require
from hookline.api.cursor import decode_position, encode_position
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented, not_found
from hookline.api.schemas import (
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionOut,
    SubscriptionStatus,
)

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


def dedupe_key(url: str, event_types: Iterable[str], operations: Iterable[str]) -> str:
    """What makes two subscribe requests the same subscription."""
    identity = [url, sorted(set(event_types)), sorted(set(operations))]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def initial_status(_body: SubscriptionCreate) -> str:
    """The status a new subscription starts in.

    The seam for the verification handshake: a self-registered endpoint will start in
    `pending_verification` until it echoes Hookline's challenge. Until then, all start active.
    """
    return SUB_ACTIVE


def to_out(row: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=row.id,
        url=row.url,
        event_types=row.event_types,
        operations=row.operations,
        header_names=sorted(row.headers),
        description=row.description,
        metadata=row.meta,
        rate_limit_per_s=row.rate_limit_per_s,
        max_in_flight=row.max_in_flight,
        status=cast(SubscriptionStatus, row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _find(session: Session, tenant_id: str, key: str) -> Subscription | None:
    query = select(Subscription).where(
        Subscription.tenant_id == tenant_id, Subscription.dedupe_key == key
    )
    return session.scalars(query).first()


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": SubscriptionCreated, "description": "Created; the secret is shown once"},
        200: {"model": SubscriptionOut, "description": "Already subscribed: the existing one"},
        **documented(401, 403, 413, 422, 503),
    },
)
def create_subscription(
    body: SubscriptionCreate,
    principal: Principal = Depends(require(SUBSCRIPTIONS_WRITE)),
    services: Services = Depends(get_services),
) -> JSONResponse:
    """Subscribe a URL to event types (and, optionally, operations).

    The same URL, event types and operations again answer 200 with the existing
    subscription, unchanged and without its secret; the other fields of the repeat are
    not applied.
    """
    settings = services.settings
    try:
        ssrf.check_url(
            body.url,
            allow_private=settings.allow_private_targets,
            allow_http=settings.allow_http,
        )
    except UnsafeTargetError as exc:
        raise ApiError(422, "unsafe_target", f"url refused: {exc}") from None
    event_types = sorted(set(body.event_types))
    operations = sorted(set(body.operations))
    key = dedupe_key(body.url, event_types, operations)
    secret = signing.new_secret()
    now = utcnow()
    try:
        with services.sessionmaker() as session, session.begin():
            existing = _find(session, principal.tenant_id, key)
            if existing is not None:
                return JSONResponse(to_out(existing).model_dump(mode="json"), status_code=200)
            row = Subscription(
                id=new_id("sub"),
                tenant_id=principal.tenant_id,
                url=body.url,
                event_types=event_types,
                operations=operations,
                secret_enc=services.secret_box.seal(secret),
                headers=body.headers,
                rate_limit_per_s=body.rate_limit_per_s,
                max_in_flight=body.max_in_flight,
                description=body.description,
                meta=body.metadata,
                status=initial_status(body),
                dedupe_key=key,
                created_at=now,
                # Routers and dispatchers reload subscriptions changed since their last look.
                updated_at=now,
            )
            session.add(row)
    except IntegrityError:
        # A concurrent identical request won the insert; answer with its subscription.
        with services.sessionmaker() as session:
            existing = _find(session, principal.tenant_id, key)
        if existing is None:
            raise
        return JSONResponse(to_out(existing).model_dump(mode="json"), status_code=200)
    created = SubscriptionCreated(**to_out(row).model_dump(), secret=secret)
    return JSONResponse(
        created.model_dump(mode="json"), status_code=201, headers={"Cache-Control": "no-store"}
    )


@router.get("", response_model=SubscriptionList, responses=documented(401, 403, 422, 503))
def list_subscriptions(
    limit: int = Query(default=100, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=1000),
    principal: Principal = Depends(require(SUBSCRIPTIONS_READ)),
    services: Services = Depends(get_services),
) -> SubscriptionList:
    """The tenant's subscriptions, oldest first, a page at a time."""
    query = select(Subscription).where(Subscription.tenant_id == principal.tenant_id)
    if cursor is not None:
        created_at, last_id = decode_position(cursor)
        query = query.where(
            or_(
                Subscription.created_at > created_at,
                and_(Subscription.created_at == created_at, Subscription.id > last_id),
            )
        )
    query = query.order_by(Subscription.created_at, Subscription.id).limit(limit + 1)
    with services.sessionmaker() as session:
        rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_position(page[-1].created_at, page[-1].id) if more else None
    return SubscriptionList(data=[to_out(row) for row in page], next_cursor=next_cursor)


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
    return to_out(row)
