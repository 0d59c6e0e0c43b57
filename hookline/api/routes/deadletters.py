"""Dead letters: deliveries that ran out of attempts (or were refused), and poison messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from common.db.models import Delivery, EventRow, PoisonMessage
from dispatcher.deadletters import (
    DeadFilter,
    FilterError,
    PoisonFilter,
    ResubmitError,
    drain_poison,
    list_dead,
    list_poison,
    show_dead,
    summarize_dead,
)
from hookline.api.auth import DELIVERIES_READ, DELIVERIES_REPLAY
from hookline.api.cursor import decode_position, encode_position
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented, not_found
from hookline.api.ops_schemas import (
    DeadLetterDetail,
    DeadLetterOut,
    DeadLetterPage,
    DeadLetterSummary,
    EventOut,
    PoisonOut,
    PoisonPage,
    StatusClass,
)
from hookline.api.opsauth import Caller, caller
from hookline.api.routes.deliveries import attempts_out
from hookline.api.schemas import TimeBound
from hookline.services import poison

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])
ERRORS = documented(401, 403, 404, 422, 503)
CORRECTED_TYPE = "application/octet-stream"
# The body of a re-submit, for the OpenAPI document: none, or the corrected message.
CORRECTED_BODY = {
    "requestBody": {
        "required": False,
        "description": "Empty: send the message as it arrived. Otherwise the corrected "
        f"message, as `{CORRECTED_TYPE}`, at most an event's size (256 KiB); admin token "
        "only.",
        "content": {CORRECTED_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


def dead_filter(
    who: Caller,
    *,
    tenant: str | None = None,
    subscription_id: str | None = None,
    event_type: str | None = None,
    reason: str | None = None,
    status_class: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: tuple[str, ...] = (),
) -> DeadFilter:
    try:
        return DeadFilter(
            tenant=who.tenant(tenant),
            subscription=subscription_id,
            event_type=event_type,
            reason=reason,
            status_class=status_class,
            since=since,
            until=until,
            ids=ids,
        )
    except FilterError as exc:
        raise ApiError(422, "validation_error", str(exc)) from None


def dead_letter_out(row: Delivery) -> DeadLetterOut:
    return DeadLetterOut(
        id=row.id,
        tenant_id=row.tenant_id,
        event_id=row.event_id,
        webhook_id=row.webhook_id,
        subscription_id=row.subscription_id,
        event_type=row.event_type,
        reason=row.dead_reason,
        attempt_count=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        replay_count=row.replay_count,
        created_at=row.created_at,
        died_at=row.finished_at,
    )


class _Filters:
    """The query parameters every dead-letter listing takes."""

    def __init__(
        self,
        subscription_id: str | None = None,
        event_type: str | None = None,
        reason: str | None = Query(None, examples=["max_attempts"]),
        status_class: StatusClass | None = None,
        since: TimeBound | None = None,
        until: TimeBound | None = None,
        tenant: str | None = Query(None, description="Admin token only: one tenant."),
    ) -> None:
        self.values = dict(
            subscription_id=subscription_id,
            event_type=event_type,
            reason=reason,
            status_class=status_class,
            since=since,
            until=until,
            tenant=tenant,
        )


@router.get("", response_model=DeadLetterPage, responses=ERRORS)
def list_dead_letters(
    filters: _Filters = Depends(),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
    who: Caller = Depends(caller(DELIVERIES_READ)),
    services: Services = Depends(get_services),
) -> DeadLetterPage:
    """Dead deliveries, newest death first, filtered and paged by cursor."""
    dead = dead_filter(who, **filters.values)  # type: ignore[arg-type]
    after = decode_position(cursor) if cursor else None
    with services.sessionmaker() as session:
        rows = list_dead(session, dead, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    next_cursor = encode_position(last.finished_at, last.id) if last and last.finished_at else None
    return DeadLetterPage(data=[dead_letter_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/summary", response_model=DeadLetterSummary, responses=ERRORS)
def summarize_dead_letters(
    filters: _Filters = Depends(),
    who: Caller = Depends(caller(DELIVERIES_READ)),
    services: Services = Depends(get_services),
) -> DeadLetterSummary:
    """How many dead letters match, by reason and by subscription, with a few ids."""
    dead = dead_filter(who, **filters.values)  # type: ignore[arg-type]
    with services.sessionmaker() as session:
        summary = summarize_dead(session, dead)
    return DeadLetterSummary(**summary.to_json())


def poison_out(row: PoisonMessage) -> PoisonOut:
    return PoisonOut(
        id=row.id,
        tenant_id=row.tenant_id,
        source_queue=row.source_queue,
        reason=row.reason,
        error=row.error,
        body=row.body,
        encoding=row.encoding,
        received_at=row.received_at,
        resubmitted_at=row.resubmitted_at,
    )


@router.get("/poison", response_model=PoisonPage, responses=ERRORS)
def list_poison_messages(
    source_queue: str | None = None,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    tenant: str | None = Query(None, description="Admin token only: one tenant."),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
    who: Caller = Depends(caller(DELIVERIES_READ)),
    services: Services = Depends(get_services),
) -> PoisonPage:
    """Messages no handler could decode, with their raw body and the error (reason `poison`);
    those still waiting in the `hookline.poison` queue are drained into the database first."""
    wanted = PoisonFilter(who.tenant(tenant), source_queue, since, until)
    after = decode_position(cursor) if cursor else None
    # What waits in `hookline.poison` is moved into the table first (committed, then acked).
    drain_poison(services.transport, services.sessionmaker)
    with services.sessionmaker() as session:
        rows = list_poison(session, wanted, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_position(rows[-1].received_at, rows[-1].id) if more else None
    return PoisonPage(data=[poison_out(r) for r in rows], next_cursor=next_cursor)


async def corrected_body(request: Request) -> bytes | None:
    """A re-submit's corrected message: the request body, raw (`BodyLimit` kept it within
    an event's size); None when there is none."""
    raw = await request.body()
    if not raw:
        return None
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != CORRECTED_TYPE:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"a corrected message is sent as {CORRECTED_TYPE}, its bytes as they are",
        )
    return raw


@router.post(
    "/poison/{poison_id}/resubmit",
    response_model=PoisonOut,
    responses=documented(401, 403, 404, 409, 413, 415, 422, 503),
    openapi_extra=CORRECTED_BODY,
)
def resubmit_poison_message(
    poison_id: str,
    who: Caller = Depends(caller(DELIVERIES_REPLAY)),
    body: bytes | None = Depends(corrected_body),
    services: Services = Depends(get_services),
) -> PoisonOut:
    """Publish the message back to the queue it came from, after the cause is fixed: as it
    arrived, or (admin token) a corrected body given as the request's."""
    if body is not None and who.tenant_id is not None:
        # Bytes put straight onto Hookline's queues, past every check ingest makes (the
        # tenant, the schema, the limits): the operator's alone. A tenant publishes a
        # fixed event through POST /v1/events.
        raise ApiError(
            403, "forbidden", "a corrected message needs the admin token; an API key "
            "re-submits the message as it arrived, or publishes a fixed event instead",
        )  # fmt: skip
    with services.sessionmaker() as session, session.begin():
        row = session.get(PoisonMessage, poison_id)
        if row is None or (who.tenant_id is not None and row.tenant_id != who.tenant_id):
            raise not_found("poison message")
        try:
            poison.resubmit(
                session, services.transport, row, body=body, actor=who.actor,
                publish_timeout_s=services.settings.publish_timeout_s,
                shards=services.settings.delivery_shards,
            )  # fmt: skip
        except ResubmitError as exc:
            raise ApiError(422, "not_resubmittable", str(exc)) from None
        session.refresh(row)
        return poison_out(row)


def _event_out(row: EventRow | None) -> EventOut | None:
    if row is None:
        return None
    return EventOut(
        id=row.id, type=row.type, operation=row.operation, timestamp=row.timestamp, data=row.data
    )


@router.get("/{delivery_id}", response_model=DeadLetterDetail, responses=ERRORS)
def get_dead_letter(
    delivery_id: str,
    who: Caller = Depends(caller(DELIVERIES_READ)),
    services: Services = Depends(get_services),
) -> DeadLetterDetail:
    """One dead letter: the event, every attempt, and the headers it was sent with."""
    with services.sessionmaker() as session:
        found = show_dead(session, delivery_id, tenant=who.tenant_id)
        if found is None:
            raise not_found("dead letter")
        return dead_letter_detail(session, found)


def dead_letter_detail(session: Session, found: Any) -> DeadLetterDetail:
    """`show_dead`'s answer as the API shows it (`hookline dlq show` too), each attempt
    with the request headers it sent."""
    attempts = attempts_out(session, found.delivery, found.attempts)
    newest = next((a.request_headers for a in reversed(attempts) if a.request_headers), [])
    return DeadLetterDetail(
        **dead_letter_out(found.delivery).model_dump(),
        event=_event_out(found.event),
        attempts=attempts,
        headers={h.name: h.value for h in newest},
    )
