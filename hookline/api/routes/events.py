"""Event ingest over HTTP, for producers that do not use the Python SDK."""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select

from common.db import lookup
from common.db.models import Delivery
from common.errors import TransportError
from common.tracing import TraceContext
from common.wire import WireEvent, new_id, utcnow
from hookline.api import traces
from hookline.api.auth import DELIVERIES_READ, EVENTS_WRITE, Principal, require, require_on_loop
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented, not_found, problems
from hookline.api.history_schemas import EventDetail
from hookline.api.routes.deliveries import summary
from hookline.api.schemas import BatchResult, EventAccepted, EventBatch, EventId, EventIn
from hookline.api.tenant_limits import admit_events
from producer import InvalidEvent

log = logging.getLogger(__name__)
SINGLE, BATCH = "/v1/events", "/v1/events/batch"
router = APIRouter(prefix=SINGLE, tags=["events"])
# Long enough for a client not to hammer a broker that is restarting.
RETRY_AFTER_S = 1
_EVENTS = TypeAdapter(list[EventIn])
SCHEMA_VIOLATION = "schema_violation"  # data that breaks the catalogued schema, mode reject
# W3C trace context: any text is taken, and only a well-formed one is used (hookline.api
# .traces); a malformed one is ignored, never refused.
TRACEPARENT_HEADER = Header(
    default=None,
    alias="traceparent",
    description="W3C trace context (`00-<trace id>-<parent id>-<flags>`): when the API "
    "traces, the accepted events join this trace. Ignored when it is not W3C.",
)
TRACESTATE_HEADER = Header(
    default=None,
    alias="tracestate",
    description="W3C vendor trace state, carried with a valid `traceparent` (at most 512 "
    "characters, 32 entries; otherwise left out).",
)


@router.post(
    "",
    status_code=202,
    response_model=EventAccepted,
    responses=documented(401, 403, 413, 422, 429, 503),
)
async def publish_event(
    body: EventIn,
    idempotency_key: EventId | None = Header(
        default=None,
        alias="Idempotency-Key",
        description="Becomes the event id when the body has none, so a retried request "
        "is recognised as the same event.",
    ),
    traceparent: str | None = TRACEPARENT_HEADER,
    tracestate: str | None = TRACESTATE_HEADER,
    principal: Principal = Depends(require_on_loop(EVENTS_WRITE)),
    services: Services = Depends(get_services),
) -> EventAccepted:
    """Accept an event: 202 only once the broker has confirmed it, so it will be delivered.

    On a 503 nothing was accepted; retry with the same `id` or `Idempotency-Key` and the
    event is delivered once per subscription even if an earlier try got through after all.
    """
    # Most requests are answered by `FastIngest` before they get here, in the same way:
    # `EventIn` checked every field, so the event is published without a second check.
    with traces.ingest(
        services.tracing, traceparent, tracestate,
        route=SINGLE, tenant=principal.tenant_id, events=1,
    ) as trace:  # fmt: skip
        return await _accept_one(body, idempotency_key, principal, services, trace)


async def _accept_one(
    body: EventIn,
    idempotency_key: str | None,
    principal: Principal,
    services: Services,
    trace: TraceContext | None,
) -> EventAccepted:
    await admit_events(services, principal.tenant_id, 1)
    fields = wire_fields(body, principal.tenant_id)
    if body.id is None and idempotency_key is not None:
        fields["id"] = idempotency_key
    check = services.schema_check
    screen = await check.screen(principal.tenant_id, [body])
    check.report(principal.tenant_id, screen, [body])
    if screen.refused:
        raise ApiError(422, SCHEMA_VIOLATION, screen.problems[0])
    try:
        # The confirm is awaited on the event loop, not a thread: while it waits, other
        # requests' events join the same confirm window (acks settle many at once).
        (event_id,) = await services.producer.publish_fields_async([fields], trace)
    except InvalidEvent as exc:
        raise ApiError(422, "invalid_event", str(exc)) from None
    except TransportError as exc:
        raise broker_unavailable(exc) from None
    return EventAccepted(id=event_id)


def broker_unavailable(exc: Exception) -> ApiError:
    log.warning("event not accepted: broker unavailable", extra={"error": type(exc).__name__})
    return ApiError(
        503,
        "broker_unavailable",
        "the message broker did not confirm the event, so it was not accepted; "
        "retry with the same id or Idempotency-Key",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def accepted(index: int, event_id: str | None) -> dict[str, Any]:
    """A `BatchItemResult` of an accepted event, as the JSON it is answered as."""
    return {"index": index, "status": "accepted", "id": event_id, "error": None}


def _rejected(index: int, message: str, code: str = "invalid_event") -> dict[str, Any]:
    error = {"code": code, "message": message}
    return {"index": index, "status": "rejected", "id": None, "error": error}


def _checked(items: list[dict[str, Any]]) -> list[EventIn | str]:
    """Each item as the API's event, or why it is not one. The whole list is validated in
    one call; only a list holding a bad item is gone through again item by item."""
    try:
        return list(_EVENTS.validate_python(items))
    except ValidationError:
        pass
    checked: list[EventIn | str] = []
    for item in items:
        try:
            checked.append(EventIn.model_validate(item))
        except ValidationError as exc:
            checked.append(problems(exc.errors()))
    return checked


def wire_fields(event: EventIn, tenant: str) -> WireEvent:
    """The wire event of an item: `EventIn` validated every field under `Event`'s own
    constraints (the shared patterns and lengths, a stricter timestamp) and the tenant is
    the caller's, so it is encoded without a second validation or a model."""
    return {
        "id": event.id or new_id("evt"),
        "tenant": tenant,
        "type": event.type,
        "operation": event.operation,
        "timestamp": event.timestamp.astimezone(UTC) if event.timestamp else utcnow(),
        "data": event.data,
    }


def accepted_batch(ids: list[str]) -> bytes:
    """The answer to a batch accepted whole, as `BatchResult` JSON. Written out directly (a
    thousand result objects cost more than the rest of the request): event ids match
    `EVENT_ID_PATTERN`, which has no character that JSON escapes."""
    results = ",".join(
        f'{{"index":{index},"status":"accepted","id":"{event_id}","error":null}}'
        for index, event_id in enumerate(ids)
    )
    return f'{{"accepted":{len(ids)},"rejected":0,"results":[{results}]}}'.encode()


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchResult,
    responses=documented(401, 403, 413, 422, 429, 503),
)
async def publish_events(
    body: EventBatch,
    traceparent: str | None = TRACEPARENT_HEADER,
    tracestate: str | None = TRACESTATE_HEADER,
    principal: Principal = Depends(require_on_loop(EVENTS_WRITE)),
    services: Services = Depends(get_services),
) -> Response:
    """Accept up to 1,000 events in one request, with a result for each.

    Events that do not fit the schema are rejected one by one (the others still go); the
    valid ones are accepted together once the broker confirmed them all. On a 503 none
    was accepted: retry the batch, and events with ids are delivered once all the same.
    The valid events count against the tenant's events per second (429 over it: none
    accepted); a batch over the tenant's batch size is refused whole (422).
    """
    with traces.ingest(
        services.tracing, traceparent, tracestate,
        route=BATCH, tenant=principal.tenant_id, events=len(body.events),
    ) as trace:  # fmt: skip
        return await _accept_batch(body, principal, services, trace)


async def _accept_batch(
    body: EventBatch, principal: Principal, services: Services, trace: TraceContext | None
) -> Response:
    checked = _checked(body.events)
    events = [item for item in checked if not isinstance(item, str)]
    screen = await services.schema_check.screen(principal.tenant_id, events)
    services.schema_check.report(principal.tenant_id, screen, events)
    refused = screen.problems if screen.refused else {}
    results: list[dict[str, Any]] = []
    valid: list[WireEvent] = []
    position = -1  # of the item among `events`
    for index, item in enumerate(checked):
        if isinstance(item, str):
            results.append(_rejected(index, item))
            continue
        position += 1
        if position in refused:
            results.append(_rejected(index, refused[position], SCHEMA_VIOLATION))
            continue
        valid.append(wire_fields(item, principal.tenant_id))
        results.append(accepted(index, None))
    await admit_events(services, principal.tenant_id, len(valid), batch=len(results))
    if len(valid) < len(results):  # the producer counts what it accepts; these it never saw
        services.metrics.events_ingested.labels(result="rejected").inc(len(results) - len(valid))
    if valid:
        try:
            ids = iter(await services.producer.publish_fields_async(valid, trace))
        except InvalidEvent as exc:
            raise ApiError(422, "invalid_event", str(exc)) from None
        except TransportError as exc:
            raise broker_unavailable(exc) from None
        for result in results:
            if result["status"] == "accepted":
                result["id"] = next(ids)
    # `BatchResult`'s shape, written directly: a thousand result models cost more than
    # the rest of the answer.
    answer = {"accepted": len(valid), "rejected": len(results) - len(valid), "results": results}
    return JSONResponse(answer, status_code=202)


@router.get(
    "/{event_id}", response_model=EventDetail, responses=documented(401, 403, 404, 422, 503)
)
def get_event(
    event_id: str,
    principal: Principal = Depends(require(DELIVERIES_READ)),
    services: Services = Depends(get_services),
) -> EventDetail:
    """An event the router has stored, with its deliveries (one per matching subscription).

    An accepted event is stored once the router has taken it from the broker, so a 404
    right after `POST /v1/events` can turn into the event a moment later."""
    with services.sessionmaker() as session:
        row = lookup.event(session, principal.tenant_id, event_id)
        if row is None:
            raise not_found("event")
        deliveries = session.scalars(
            select(Delivery)
            .where(
                Delivery.tenant_id == principal.tenant_id,
                Delivery.event_id == event_id,
                Delivery.day == row.day,  # an event's deliveries live on its day
            )
            .order_by(Delivery.created_at, Delivery.id)
        ).all()
    return EventDetail(
        id=row.id, type=row.type, operation=row.operation, timestamp=row.timestamp,
        received_at=row.received_at, data=row.data,
        deliveries=[summary(delivery) for delivery in deliveries],
    )  # fmt: skip
