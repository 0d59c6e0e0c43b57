"""What a tenant does with a subscription beyond editing it: pause and resume, verify,
rotate and reveal its secret, and read the public key of its ed25519 signatures."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from hookline.api.auth import SUBSCRIPTIONS_READ, SUBSCRIPTIONS_WRITE, Principal, require
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented
from hookline.api.routes.subscriptions import to_out
from hookline.api.schemas import SubscriptionStatus
from hookline.api.service_calls import ServiceRoute, acting, outbound, reaching_endpoint
from hookline.api.subscription_schemas import (
    PublicKeyOut,
    RotateSecret,
    SecretOut,
    SubscriptionOut,
    VerificationOut,
)
from hookline.services import subscription_actions as actions
from hookline.services import subscriptions

router = APIRouter(
    prefix="/v1/subscriptions/{subscription_id}", tags=["subscriptions"], route_class=ServiceRoute
)
ERRORS = documented(401, 403, 404, 409, 422, 503)
NO_STORE = {"Cache-Control": "no-store"}
WRITE = Depends(require(SUBSCRIPTIONS_WRITE))


@router.post("/pause", response_model=SubscriptionOut, responses=ERRORS)
def pause_subscription(
    subscription_id: str,
    request: Request,
    principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> SubscriptionOut:
    """Stop routing new events to the subscription until it is resumed."""
    with services.sessionmaker() as session, session.begin():
        row = actions.pause(
            session, principal.tenant_id, subscription_id, actor=acting(request, principal)
        )
    return to_out(row, services)


@router.post("/resume", response_model=SubscriptionOut, responses=ERRORS)
def resume_subscription(
    subscription_id: str,
    request: Request,
    principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> SubscriptionOut:
    """Make a paused or disabled subscription active again (it must have been verified)."""
    with services.sessionmaker() as session, session.begin():
        row = actions.resume(
            session, principal.tenant_id, subscription_id, actor=acting(request, principal)
        )
    return to_out(row, services)


@router.post(
    "/verify", response_model=VerificationOut, responses=documented(401, 403, 404, 422, 429, 503)
)
async def verify_subscription(
    subscription_id: str,
    request: Request,
    principal: Principal = WRITE,
    services: Services = Depends(get_services),
) -> VerificationOut:
    """Run the verification handshake again; a pending subscription becomes active on success.
    A tenant with as many handshakes in progress as its limit gets 429."""
    call = partial(
        subscriptions.verify_again, services.sessionmaker, principal.tenant_id,
        subscription_id, actor=acting(request, principal), outbound=outbound(services),
    )  # fmt: skip
    outcome, after = await reaching_endpoint(services, principal.tenant_id, call)
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
    with services.sessionmaker() as session, session.begin():
        secret, expires_at = actions.rotate_secret(
            session, principal.tenant_id, subscription_id, overlap_s=overlap_s,
            actor=acting(request, principal), box=services.secret_box,
        )  # fmt: skip
    out = SecretOut(secret=secret, previous_secret_expires_at=expires_at)
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
        secret, expires_at = actions.reveal_secret(
            session, principal.tenant_id, subscription_id,
            actor=acting(request, principal), box=services.secret_box,
        )  # fmt: skip
    out = SecretOut(secret=secret, previous_secret_expires_at=expires_at)
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
        key = actions.public_key(
            session, principal.tenant_id, subscription_id, box=services.secret_box
        )
    return PublicKeyOut(algorithm="ed25519", public_key=key)
