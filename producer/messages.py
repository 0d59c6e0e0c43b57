"""What a publish sends: validated events as messages, and the trace context they carry."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from common import payload
from common.tracing import TraceContext, parse
from common.transport import Outgoing, topology
from common.wire import Event, encode, timestamp_problem
from producer.errors import InvalidEvent

EventLike = Event | Mapping[str, Any]


def _aware_utc(timestamp: datetime) -> datetime:
    # The database stores UTC-aware datetimes only; guessing a naive value's zone would
    # silently shift it, so the caller has to say.
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise InvalidEvent("invalid event: timestamp: must carry a timezone (e.g. UTC)")
    try:
        in_utc = timestamp.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent("invalid event: timestamp: out of range once in UTC") from None
    problem = timestamp_problem(in_utc)
    if problem is not None:
        raise InvalidEvent(f"invalid event: timestamp: {problem}")
    return in_utc


def build_event(fields: Mapping[str, Any], *, where: str = "") -> Event:
    """A validated `Event` from its fields; omitted `id` and `timestamp` are generated."""
    present = {key: value for key, value in fields.items() if value is not None}
    try:
        event = Event.model_validate(present)
    except ValidationError as exc:
        raise InvalidEvent.from_validation(exc, where=where) from None
    return in_utc(event, where=where)


def in_utc(event: Event, *, where: str = "") -> Event:
    """The event with its timestamp in UTC (a copy only when it is not already), once its
    data is known to be what the router can store (the API's check, `common.payload`)."""
    try:
        payload.check(event.data, "data")
    except payload.UnstorableValue as exc:
        raise InvalidEvent(f"invalid event{where}: {exc}") from None
    aware = _aware_utc(event.timestamp)
    return (
        event
        if aware.utcoffset() == event.timestamp.utcoffset()
        else event.model_copy(update={"timestamp": aware})
    )


def outgoing(event: Event) -> Outgoing:
    try:
        body = encode(event)
    except PydanticSerializationError as exc:
        raise InvalidEvent(f"invalid event: data is not JSON-serialisable: {exc}") from None
    return Outgoing(
        exchange=topology.EVENTS, routing_key=event.type, body=body, message_id=event.id
    )


def trace_context(traceparent: str | None, tracestate: str | None) -> TraceContext | None:
    """The caller's W3C context for the events it publishes; a `traceparent` given that is
    not W3C is refused (a `tracestate` that is not is left out, as W3C asks)."""
    if traceparent is None:
        return None
    context = parse(traceparent, tracestate)
    if context is None:
        raise InvalidEvent(
            "invalid trace context: traceparent must be W3C: version, trace id, parent id "
            "and flags in lowercase hex joined by dashes (00-<32 hex>-<16 hex>-<2 hex>), "
            "ids not all zero"
        )
    return context


def carrying(messages: list[Outgoing], context: TraceContext | None) -> list[Outgoing]:
    if context is None:
        return messages
    headers = context.headers()
    return [dataclasses.replace(message, headers=headers) for message in messages]
