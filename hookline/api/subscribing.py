"""Creating, finding and verifying subscriptions: what the tenant and admin routes share.

Subscribing is idempotent: the same URL, event types and operations identify one
subscription per tenant, so a receiver or a deploy script may subscribe on every start.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import cast

from fastapi import Request
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common import signing, ssrf
from common.db.models import SUB_ACTIVE, SUB_PENDING, Subscription
from common.errors import UnsafeTargetError
from common.wire import new_id, utcnow
from hookline.api import audit
from hookline.api.auth import Principal
from hookline.api.deps import Services
from hookline.api.errors import ApiError, not_found
from hookline.api.schemas import SubscriptionStatus
from hookline.api.subscription_schemas import SubscriptionCreate, SubscriptionOut
from hookline.api.verification import Outcome, handshake

Actor = Principal | str


def dedupe_key(url: str, event_types: Iterable[str], operations: Iterable[str]) -> str:
    """What makes two subscribe requests the same subscription."""
    identity = [url, sorted(set(event_types)), sorted(set(operations))]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


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
        status=cast(SubscriptionStatus, row.status),
        disabled_reason=row.disabled_reason,
        public_key=public,
        verified_at=row.verified_at,
        previous_secret_expires_at=row.previous_secret_expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def check_target(services: Services, url: str) -> None:
    settings = services.settings
    try:
        ssrf.check_url(
            url,
            allow_private=settings.allow_private_targets,
            allow_http=settings.allow_http,
            resolver=services.resolver,
        )
    except UnsafeTargetError as exc:
        raise ApiError(422, "unsafe_target", f"url refused: {exc}") from None


def owned(session: Session, tenant_id: str, subscription_id: str) -> Subscription:
    """The tenant's subscription, locked for the change; another tenant's is not found."""
    row = session.scalars(
        select(Subscription)
        .where(Subscription.id == subscription_id, Subscription.tenant_id == tenant_id)
        .with_for_update()
    ).first()
    if row is None:
        raise not_found("subscription")
    return row


def _find(session: Session, tenant_id: str, key: str) -> Subscription | None:
    query = select(Subscription).where(
        Subscription.tenant_id == tenant_id, Subscription.dedupe_key == key
    )
    return session.scalars(query).first()


def create(
    services: Services,
    request: Request,
    tenant_id: str,
    body: SubscriptionCreate,
    *,
    actor: Actor,
    verified: bool,
) -> tuple[Subscription, str | None]:
    """The new subscription and its secret, or the existing identical one and None."""
    check_target(services, body.url)
    event_types = sorted(set(body.event_types))
    operations = sorted(set(body.operations))
    key = dedupe_key(body.url, event_types, operations)
    secret = signing.new_secret()
    box = services.secret_box
    now = utcnow()
    try:
        with services.sessionmaker() as session, session.begin():
            existing = _find(session, tenant_id, key)
            if existing is not None:
                return existing, None
            row = Subscription(
                id=new_id("sub"),
                tenant_id=tenant_id,
                url=body.url,
                event_types=event_types,
                operations=operations,
                payload_filter=body.filter,
                secret_enc=box.seal(secret),
                signing_key_enc=box.seal(signing.new_signing_key()) if body.ed25519 else None,
                headers=box.seal_values(body.headers),
                rate_limit_per_s=body.rate_limit_per_s,
                max_in_flight=body.max_in_flight,
                description=body.description,
                meta=body.metadata,
                status=SUB_ACTIVE if verified else SUB_PENDING,
                verified_at=now if verified else None,
                dedupe_key=key,
                created_at=now,
                # Routers and dispatchers reload subscriptions changed since their last look.
                updated_at=now,
            )
            session.add(row)
            audit.record(
                session, request, actor=actor, action="subscription.created",
                resource_type="subscription", resource_id=row.id, tenant_id=tenant_id,
                details={"url": body.url, "pre_verified": verified},
            )  # fmt: skip
    except IntegrityError:
        # A concurrent identical request won the insert; answer with its subscription.
        with services.sessionmaker() as session:
            existing = _find(session, tenant_id, key)
        if existing is None:
            raise
        return existing, None
    return row, secret


def verify(services: Services, request: Request, row: Subscription, *, actor: Actor) -> Outcome:
    """Run the handshake for `row` now; on success a pending subscription becomes active.

    The POST happens outside any transaction; the status moves only if nobody changed the
    subscription's URL meanwhile, so a stale success cannot activate a new URL.
    """
    box = services.secret_box
    keys = [box.open(row.secret_enc)]
    if row.signing_key_enc:
        keys.append(box.open(row.signing_key_enc))
    headers = box.open_values(row.headers or {})
    outcome = handshake(row.url, keys, headers, services.settings, resolver=services.resolver)
    now = utcnow()
    with services.sessionmaker() as session, session.begin():
        if outcome.verified:
            session.execute(
                update(Subscription)
                .where(Subscription.id == row.id, Subscription.url == row.url)
                .values(verified_at=now, updated_at=now)
            )
            session.execute(
                update(Subscription)
                .where(
                    Subscription.id == row.id,
                    Subscription.url == row.url,
                    Subscription.status == SUB_PENDING,
                )
                .values(status=SUB_ACTIVE, updated_at=now)
            )
        audit.record(
            session, request, actor=actor,
            action="subscription.verified" if outcome.verified else "subscription.verify_failed",
            resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
            details={"detail": outcome.detail},
        )  # fmt: skip
    return outcome


def reload(services: Services, subscription_id: str) -> Subscription:
    with services.sessionmaker() as session:
        row = session.get(Subscription, subscription_id)
    if row is None:
        raise not_found("subscription")
    return row
