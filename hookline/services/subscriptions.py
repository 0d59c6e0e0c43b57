"""Subscriptions: subscribe, find, change, verify and delete; what the tenant and admin
routes share.

Subscribing is idempotent: the same URL, event types and operations identify one
subscription per tenant, so a receiver or a deploy script may subscribe on every start.

The functions that run the verification handshake (`subscribe`, `change`, `verify`) take a
sessionmaker rather than a session: the POST to the endpoint must happen outside any
transaction, between the change and the status it reaches. The others take the caller's
session and leave the commit to it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from common import signing, ssrf
from common.db.models import Subscription
from common.db.statuses import SubscriptionStatus
from common.errors import UnsafeTargetError
from common.secretbox import SecretBox
from common.settings import Settings
from common.ssrf import Resolver
from common.wire import new_id, utcnow
from hookline.api.subscription_schemas import SubscriptionCreate
from hookline.services import audit, limits
from hookline.services import event_types as catalogue
from hookline.services.audit import Actor
from hookline.services.errors import Conflict, Invalid, NotFound, UnsafeTarget
from hookline.services.verification import Outcome, handshake


@dataclass(frozen=True)
class Outbound:
    """What reaching an endpoint needs: the SSRF rules and timeouts, the resolver, and the
    box that seals and opens the secrets the handshake signs with."""

    settings: Settings
    resolver: Resolver
    box: SecretBox


def dedupe_key(url: str, event_types: Iterable[str], operations: Iterable[str]) -> str:
    """What makes two subscribe requests the same subscription."""
    identity = [url, sorted(set(event_types)), sorted(set(operations))]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def check_target(outbound: Outbound, url: str) -> None:
    settings = outbound.settings
    try:
        ssrf.check_url(
            url,
            allow_private=settings.allow_private_targets,
            allow_http=settings.allow_http,
            resolver=outbound.resolver,
        )
    except UnsafeTargetError as exc:
        raise UnsafeTarget(f"url refused: {exc}") from None


def owned(session: Session, tenant_id: str, subscription_id: str) -> Subscription:
    """The tenant's subscription, locked for the change; another tenant's is not found."""
    row = session.scalars(
        select(Subscription)
        .where(Subscription.id == subscription_id, Subscription.tenant_id == tenant_id)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound("subscription")
    return row


def get(session: Session, tenant_id: str, subscription_id: str) -> Subscription:
    """The tenant's subscription, to read; another tenant's is not found."""
    query = select(Subscription).where(
        Subscription.id == subscription_id, Subscription.tenant_id == tenant_id
    )
    row = session.scalars(query).first()
    if row is None:
        raise NotFound("subscription")
    return row


def of_tenant(tenant_id: str, status: str | None) -> Select[tuple[Subscription]]:
    """The query for a tenant's subscriptions (optionally in one status), for paging."""
    query = select(Subscription).where(Subscription.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Subscription.status == status)
    return query


def reload(sessions: sessionmaker[Session], subscription_id: str) -> Subscription:
    with sessions() as session:
        row = session.get(Subscription, subscription_id)
    if row is None:
        raise NotFound("subscription")
    return row


def _find(session: Session, tenant_id: str, key: str) -> Subscription | None:
    query = select(Subscription).where(
        Subscription.tenant_id == tenant_id, Subscription.dedupe_key == key
    )
    return session.scalars(query).first()


def subscribe(
    sessions: sessionmaker[Session],
    tenant_id: str,
    body: SubscriptionCreate,
    *,
    actor: Actor,
    verified: bool,
    outbound: Outbound,
) -> tuple[Subscription, str | None, Outcome | None]:
    """The new subscription and its secret, or the existing identical one and None; with
    the handshake's outcome when one ran (a pending subscription), else None.

    A subscription left `pending_verification` (new, or an earlier identical one) goes
    through the handshake at once; the row returned shows the status it reached. A new one
    past the tenant's `max_subscriptions` raises `AtLimit` (`limits.room_for_subscription`).
    """
    check_target(outbound, body.url)
    event_types = sorted(set(body.event_types))
    operations = sorted(set(body.operations))
    key = dedupe_key(body.url, event_types, operations)
    secret = signing.new_secret()
    box = outbound.box
    now = utcnow()
    row: Subscription | None
    created = False
    try:
        with sessions() as session, session.begin():
            row = _find(session, tenant_id, key)
            if row is None:
                limits.room_for_subscription(session, tenant_id, outbound.settings)
                catalogue.require_catalogued(session, tenant_id, event_types)
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
                    propagate_trace=body.propagate_trace,
                    description=body.description,
                    meta=body.metadata,
                    status=SubscriptionStatus.ACTIVE
                    if verified
                    else SubscriptionStatus.PENDING_VERIFICATION,
                    verified_at=now if verified else None,
                    dedupe_key=key,
                    created_at=now,
                    # Routers and dispatchers reload subscriptions changed since their last look.
                    updated_at=now,
                )
                session.add(row)
                created = True
                audit.record(
                    session, actor, action="subscription.created",
                    resource_type="subscription", resource_id=row.id, tenant_id=tenant_id,
                    details={"url": body.url, "pre_verified": verified},
                )  # fmt: skip
    except IntegrityError:
        # A concurrent identical request won the insert; answer with its subscription.
        with sessions() as session:
            row = _find(session, tenant_id, key)
        if row is None:
            raise
        created = False
    outcome = None
    if row.status == SubscriptionStatus.PENDING_VERIFICATION:
        outcome = verify(sessions, row, actor=actor, outbound=outbound)
        row = reload(sessions, row.id)
    return row, secret if created else None, outcome


def verify(
    sessions: sessionmaker[Session], row: Subscription, *, actor: Actor, outbound: Outbound
) -> Outcome:
    """Run the handshake for `row` now; on success a pending subscription becomes active.

    The POST happens outside any transaction; the status moves only if nobody changed the
    subscription's URL meanwhile, so a stale success cannot activate a new URL.
    """
    box = outbound.box
    keys = [box.open(row.secret_enc)]
    if row.signing_key_enc:
        keys.append(box.open(row.signing_key_enc))
    headers = box.open_values(row.headers or {})
    outcome = handshake(row.url, keys, headers, outbound.settings, resolver=outbound.resolver)
    now = utcnow()
    with sessions() as session, session.begin():
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
                    Subscription.status == SubscriptionStatus.PENDING_VERIFICATION,
                )
                .values(status=SubscriptionStatus.ACTIVE, updated_at=now)
            )
        audit.record(
            session, actor,
            action="subscription.verified" if outcome.verified else "subscription.verify_failed",
            resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
            details={"detail": outcome.detail},
        )  # fmt: skip
    return outcome


def verify_again(
    sessions: sessionmaker[Session],
    tenant_id: str,
    subscription_id: str,
    *,
    actor: Actor,
    outbound: Outbound,
) -> tuple[Outcome, Subscription]:
    """The handshake for the tenant's subscription, and the subscription after it."""
    with sessions() as session:
        row = owned(session, tenant_id, subscription_id)
    outcome = verify(sessions, row, actor=actor, outbound=outbound)
    return outcome, reload(sessions, subscription_id)


def change(
    sessions: sessionmaker[Session],
    tenant_id: str,
    subscription_id: str,
    changes: dict[str, Any],
    *,
    actor: Actor,
    outbound: Outbound,
) -> Subscription:
    """Apply the fields in `changes`. A new URL is checked, and the subscription goes back
    to `pending_verification` and through the handshake for the new endpoint."""
    if changes.get("url") is not None:
        check_target(outbound, changes["url"])
    for name in ("event_types", "url", "propagate_trace"):
        if name in changes and changes[name] is None:
            raise Invalid(f"{name} cannot be null")
    if changes.get("headers"):  # values are sealed at rest, like secrets
        changes = {**changes, "headers": outbound.box.seal_values(changes["headers"])}
    try:
        with sessions() as session, session.begin():
            row = owned(session, tenant_id, subscription_id)
            if "event_types" in changes:
                catalogue.require_catalogued(session, tenant_id, changes["event_types"])
            moved = changes.get("url") is not None and changes["url"] != row.url
            _apply(row, changes)
            if moved:
                row.status, row.verified_at = SubscriptionStatus.PENDING_VERIFICATION, None
            row.updated_at = utcnow()
            audit.record(
                session, actor, action="subscription.updated",
                resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
                details={"fields": sorted(changes)},
            )  # fmt: skip
    except IntegrityError:
        raise Conflict("another subscription has this url, event types and operations") from None
    if moved:
        verify(sessions, row, actor=actor, outbound=outbound)
        row = reload(sessions, row.id)
    return row


def _apply(row: Subscription, changes: dict[str, Any]) -> None:
    simple = {
        "headers": "headers", "filter": "payload_filter", "description": "description",
        "metadata": "meta", "rate_limit_per_s": "rate_limit_per_s",
        "max_in_flight": "max_in_flight", "url": "url", "propagate_trace": "propagate_trace",
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
    row.dedupe_key = dedupe_key(row.url, row.event_types, row.operations)


def delete(session: Session, tenant_id: str, subscription_id: str, *, actor: Actor) -> None:
    """Delete a subscription: nothing more is routed to it. Its deliveries stay readable."""
    row = owned(session, tenant_id, subscription_id)
    session.delete(row)
    audit.record(
        session, actor, action="subscription.deleted",
        resource_type="subscription", resource_id=subscription_id,
        tenant_id=tenant_id, details={"url": row.url},
    )  # fmt: skip
