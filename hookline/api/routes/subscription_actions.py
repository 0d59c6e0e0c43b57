"""What a tenant does with a subscription beyond editing it: pause and resume, verify,
rotate and reveal its secret, and read the public key of its ed25519 signatures."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from common import signing
from common.db.models import SUB_ACTIVE, SUB_DISABLED, SUB_PAUSED, SUB_PENDING
from common.wire import utcnow
from hookline.api import audit, subscribing
from hookline.api.auth import SUBSCRIPTIONS_READ, SUBSCRIPTIONS_WRITE, Principal, require
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented, not_found
from hookline.api.schemas import SubscriptionStatus
from hookline.api.subscription_schemas import (
    PublicKeyOut,
    RotateSecret,
    SecretOut,
    SubscriptionOut,
    VerificationOut,
)

router = APIRouter(prefix="/v1/subscriptions/{subscription_id}", tags=["subscriptions"])
ERRORS = documented(401, 403, 404, 409, 422, 503)
NO_STORE = {"Cache-Control": "no-store"}
WRITE = Depends(require(SUBSCRIPTIONS_WRITE))


def _move(
    services: Services,
    request: Request,
    principal: Principal,
    subscription_id: str,
    *,
    action: str,
    allowed_from: tuple[str, ...],
) -> SubscriptionOut:
    with services.sessionmaker() as session, session.begin():
        row = subscribing.owned(session, principal.tenant_id, subscription_id)
        # Checked first: a pending subscription, too, becomes active only by the handshake.
        if action == "resume" and row.verified_at is None:
            raise ApiError(
                409, "not_verified", "the endpoint has not passed the handshake: verify first"
            )
        if row.status not in allowed_from:
            raise ApiError(409, "conflict", f"a subscription that is {row.status} cannot {action}")
        row.status = SUB_PAUSED if action == "pause" else SUB_ACTIVE
        if action == "resume":
            # Re-enabled, the delivery engine's failure streak starts from nothing.
            row.disabled_reason, row.failing_since, row.consecutive_dead = None, None, 0
        row.updated_at = utcnow()
        audit.record(
            session, request, actor=principal, action=f"subscription.{action}d",
            resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
        )  # fmt: skip
    return subscribing.to_out(row, services)


@router.post("/pause", response_model=SubscriptionOut, responses=ERRORS)
def pause_subscription(
    subscription_id: str,
    request: Request,
    principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> SubscriptionOut:
    """Stop routing new events to the subscription until it is resumed."""
    return _move(
        services, request, principal, subscription_id,
        action="pause", allowed_from=(SUB_ACTIVE, SUB_PENDING, SUB_PAUSED),
    )  # fmt: skip


@router.post("/resume", response_model=SubscriptionOut, responses=ERRORS)
def resume_subscription(
    subscription_id: str,
    request: Request,
    principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> SubscriptionOut:
    """Make a paused or disabled subscription active again (it must have been verified)."""
    return _move(
        services, request, principal, subscription_id,
        action="resume", allowed_from=(SUB_PAUSED, SUB_DISABLED, SUB_ACTIVE),
    )  # fmt: skip


@router.post("/verify", response_model=VerificationOut, responses=ERRORS)
def verify_subscription(
    subscription_id: str,
    request: Request,
    principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> VerificationOut:
    """Run the verification handshake again; a pending subscription becomes active on success."""
    with services.sessionmaker() as session:
        row = subscribing.owned(session, principal.tenant_id, subscription_id)
    outcome = subscribing.verify(services, request, row, actor=principal)
    after = subscribing.reload(services, subscription_id)
    return VerificationOut(
        verified=outcome.verified, status=_status(after.status), detail=outcome.detail
    )


def _status(value: str) -> SubscriptionStatus:
    status: SubscriptionStatus = value  # type: ignore[assignment]
    return status


@router.post(
    "/rotate-secret", response_model=SecretOut, responses=documented(401, 403, 404, 422, 503)
)
def rotate_secret(
    subscription_id: str,
    request: Request,
    body: Annotated[RotateSecret | None, Body()] = None,
    principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> JSONResponse:
    """A new signing secret. For `overlap_s` (default 24 h) webhooks carry a signature
    with the old secret too, so receivers can switch without losing a webhook."""
    overlap_s = (body or RotateSecret()).overlap_s
    secret = signing.new_secret()
    box = services.secret_box
    now = utcnow()
    with services.sessionmaker() as session, session.begin():
        row = subscribing.owned(session, principal.tenant_id, subscription_id)
        if overlap_s > 0:
            row.previous_secret_enc = row.secret_enc
            row.previous_secret_expires_at = now + timedelta(seconds=overlap_s)
        else:
            row.previous_secret_enc, row.previous_secret_expires_at = None, None
        row.secret_enc = box.seal(secret)
        row.updated_at = now
        audit.record(
            session, request, actor=principal, action="subscription.secret_rotated",
            resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
            details={"overlap_s": overlap_s},
        )  # fmt: skip
        out = SecretOut(secret=secret, previous_secret_expires_at=row.previous_secret_expires_at)
    return JSONResponse(out.model_dump(mode="json"), headers=NO_STORE)


@router.get("/secret", response_model=SecretOut, responses=documented(401, 403, 404, 422, 503))
def reveal_secret(
    subscription_id: str,
    request: Request,
    principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> JSONResponse:
    """The current signing secret, for a receiver that lost it (needs the write scope;
    every reveal is in the audit log)."""
    with services.sessionmaker() as session, session.begin():
        row = subscribing.owned(session, principal.tenant_id, subscription_id)
        out = SecretOut(
            secret=services.secret_box.open(row.secret_enc),
            previous_secret_expires_at=row.previous_secret_expires_at,
        )
        audit.record(
            session, request, actor=principal, action="subscription.secret_revealed",
            resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
        )  # fmt: skip
    return JSONResponse(out.model_dump(mode="json"), headers=NO_STORE)


@router.get(
    "/public-key", response_model=PublicKeyOut, responses=documented(401, 403, 404, 422, 503)
)
def get_public_key(
    subscription_id: str,
    principal: Principal = Depends(require(SUBSCRIPTIONS_READ)),
    services: Services = Depends(get_services),
) -> PublicKeyOut:
    """The ed25519 public key that verifies this subscription's `v1a` signatures."""
    with services.sessionmaker() as session:
        row = subscribing.owned(session, principal.tenant_id, subscription_id)
    if not row.signing_key_enc:
        raise not_found("public key (the subscription signs with HMAC only)")
    key = services.secret_box.open(row.signing_key_enc)
    return PublicKeyOut(algorithm="ed25519", public_key=signing.public_key(key))
