"""What a publish sends: validated events as messages, and the trace context they carry."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from common import payload
from common.tracing import TraceContext, parse
from common.transport import Outgoing, topology
from common.wire import Event, encode, timestamp_problem
from producer.errors import InvalidEvent

EventLike = Event | Mapping[str, Any]


def build_event(fields: Mapping[str, Any], *, where: str = "") -> Event:
    """A validated `Event` from its fields; omitted `id` and `timestamp` are generated."""
    present = {key: value for key, value in fields.items() if value is not None}
    try:
        event = Event.model_validate(present)
    except ValidationError as exc:
        raise InvalidEvent.from_validation(exc, where=where) from None
    return checked(event, where=where)


def checked(event: Event, *, where: str = "") -> Event:
    """`event`, once its data is what the router can store (the API's check,
    `common.payload`) and its timestamp is near the clock (the model keeps it aware and in
    UTC: a time without a zone never makes an `Event`)."""
    try:
        payload.check(event.data, "data")
    except payload.UnstorableValue as exc:
        raise InvalidEvent(f"invalid event{where}: {exc}") from None
    problem = timestamp_problem(event.timestamp)
    if problem is not None:
        raise InvalidEvent(f"invalid event{where}: timestamp: {problem}")
    return event


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
