"""Event ingest over HTTP, for producers that do not use the Python SDK."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Header

from common.errors import TransportError
from hookline.api.auth import EVENTS_WRITE, Principal, require
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented
from hookline.api.schemas import EventAccepted, EventId, EventIn
from producer import InvalidEvent

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/events", tags=["events"])
# Long enough for a client not to hammer a broker that is restarting.
RETRY_AFTER_S = 1


@router.post(
    "",
    status_code=202,
    response_model=EventAccepted,
    responses=documented(401, 403, 413, 422, 503),
)
def publish_event(
    body: EventIn,
    idempotency_key: EventId | None = Header(
        default=None,
        alias="Idempotency-Key",
        description="Becomes the event id when the body has none, so a retried request "
        "is recognised as the same event.",
    ),
    principal: Principal = Depends(require(EVENTS_WRITE)),
    services: Services = Depends(get_services),
) -> EventAccepted:
    """Accept an event: 202 only once the broker has confirmed it, so it will be delivered.

    On a 503 nothing was accepted; retry with the same `id` or `Idempotency-Key` and the
    event is delivered once per subscription even if an earlier try got through after all.
    """
    try:
        event_id = services.producer.publish(
            body.type,
            body.data,
            tenant=principal.tenant_id,
            id=body.id or idempotency_key,
            operation=body.operation,
            timestamp=body.timestamp,
        )
    except InvalidEvent as exc:
        raise ApiError(422, "invalid_event", str(exc)) from None
    except TransportError as exc:
        log.warning("event not accepted: broker unavailable", extra={"error": type(exc).__name__})
        raise ApiError(
            503,
            "broker_unavailable",
            "the message broker did not confirm the event, so it was not accepted; "
            "retry with the same id or Idempotency-Key",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    return EventAccepted(id=event_id)
