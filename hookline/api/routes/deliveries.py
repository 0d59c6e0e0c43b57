"""Deliveries: one event to one subscription, with every HTTP attempt made for it."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Depends
from sqlalchemy import select

from common.db.models import Attempt, Delivery
from hookline.api.auth import DELIVERIES_READ, Principal, require
from hookline.api.deps import Services, get_services
from hookline.api.errors import documented, not_found
from hookline.api.schemas import AttemptOut, DeliveryOut, DeliveryStatus

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


def _attempt_out(row: Attempt) -> AttemptOut:
    return AttemptOut(
        attempt=row.attempt,
        outcome=row.outcome,
        status_code=row.status_code,
        duration_s=row.duration_s,
        error=row.error,
        response_body=row.response_body,
        created_at=row.created_at,
    )


@router.get(
    "/{delivery_id}", response_model=DeliveryOut, responses=documented(401, 403, 404, 422, 503)
)
def get_delivery(
    delivery_id: str,
    principal: Principal = Depends(require(DELIVERIES_READ)),
    services: Services = Depends(get_services),
) -> DeliveryOut:
    """One delivery of the tenant and its attempts, oldest first."""
    with services.sessionmaker() as session:
        row = session.scalars(
            select(Delivery).where(
                Delivery.id == delivery_id, Delivery.tenant_id == principal.tenant_id
            )
        ).first()
        if row is None:
            raise not_found("delivery")
        attempts = session.scalars(
            select(Attempt).where(Attempt.delivery_id == row.id).order_by(Attempt.id)
        ).all()
    return DeliveryOut(
        id=row.id,
        event_id=row.event_id,
        subscription_id=row.subscription_id,
        event_type=row.event_type,
        status=cast(DeliveryStatus, row.status),
        attempt_count=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        dead_reason=row.dead_reason,
        replay_count=row.replay_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        attempts=[_attempt_out(attempt) for attempt in attempts],
    )
