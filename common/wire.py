"""The wire formats: events as producers publish them, delivery messages between services.

Secrets never travel in messages: the dispatcher reads them from the database at send time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from common.errors import DecodeError
from common.ids import day_of as day_of
from common.ids import delivery_id_for as delivery_id_for
from common.ids import new_id as new_id
from common.ids import webhook_id_for as webhook_id_for

EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"
OPERATION_PATTERN = r"^[A-Za-z0-9_\-.]+$"
EVENT_ID_PATTERN = r"^[A-Za-z0-9_\-.:]+$"
# Hookline's own operational events (`hookline.subscription.disabled`): the API refuses them
# from producers, so that a tenant's subscribers can trust them.
OWN_TYPE_PREFIX = "hookline."
M = TypeVar("M", bound=BaseModel)


def utcnow() -> datetime:
    return datetime.now(UTC)


# How far an event's own timestamp may be from the clock at ingest. The end-to-end metric
# (hookline_delivery_e2e_seconds) runs from this timestamp, so a backdated event would
# count years of "latency"; bounded, one event's error is at most a day.
MAX_EVENT_AGE = timedelta(hours=24)
MAX_EVENT_LEAD = timedelta(minutes=5)


def timestamp_problem(timestamp: datetime) -> str | None:
    """Why an event's (aware) timestamp is not accepted at ingest, or None."""
    now = utcnow()
    if timestamp < now - MAX_EVENT_AGE:
        return "more than 24 hours in the past (omit it: the time of ingest is used)"
    if timestamp > now + MAX_EVENT_LEAD:
        return "more than 5 minutes in the future"
    return None


def in_utc(value: datetime) -> datetime:
    """A pydantic validator: the (aware) time in UTC, as it is compared and stored. One an
    offset takes outside years 1-9999 (`0001-01-01T00:00:00+14:00`) is a validation error;
    converting it overflows, and pydantic would let the OverflowError through."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_range", "out of range once converted to UTC (years 1 to 9999)"
        ) from None


UtcInstant = Annotated[AwareDatetime, AfterValidator(in_utc)]


class Event(BaseModel):
    """A business event: the unit producers publish and subscribers receive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        default_factory=lambda: new_id("evt"),
        min_length=1,
        max_length=200,
        pattern=EVENT_ID_PATTERN,
    )
    tenant: str = Field(min_length=1, max_length=64, pattern=EVENT_ID_PATTERN)
    type: str = Field(min_length=1, max_length=200, pattern=EVENT_TYPE_PATTERN)
    operation: str | None = Field(default=None, max_length=100, pattern=OPERATION_PATTERN)
    # In UTC once decoded, and aware: the router stores it, the dispatcher's e2e metric
    # subtracts it from the clock (a naive time raised there, after the ack).
    timestamp: UtcInstant = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict)

    def webhook_body(self) -> dict[str, Any]:
        """The JSON body a subscriber receives (Standard Webhooks shape)."""
        body: dict[str, Any] = {
            "type": self.type,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }
        if self.operation is not None:
            body["operation"] = self.operation
        return body


# The ids a delivery message carries: every id Hookline makes (`dlv_`, `evt_`, `sub_`,
# `ten_` and hex; the uuid5 delivery ids of before 0011) and every event id ingest takes.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=EVENT_ID_PATTERN)
]
MAX_ATTEMPT = 2**31 - 1  # attempts.attempt is an int4


class DeliveryMessage(BaseModel):
    """One delivery of one event to one subscription, as it moves through the queues."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Checked here, where a message enters a dispatcher: a delivery queue also takes
    # messages the router did not write (an operator's tool, a resubmitted poison message),
    # and a value the database refuses (a NUL, an int4 overflow, a time without a zone or
    # outside years 1-9999 in UTC) would fail the settler's shared batch instead of
    # poisoning its own message.
    delivery_id: Identifier
    event_id: Identifier
    tenant: Identifier
    subscription_id: Identifier
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    event: Event
    first_attempt_at: UtcInstant | None = None
    replay: bool = False


def decode(model: type[M], body: bytes) -> M:
    """Parse a message body, turning any failure into `DecodeError` (poison, not a crash)."""
    try:
        return model.model_validate_json(body)
    except (ValidationError, ValueError) as exc:
        raise DecodeError(f"{model.__name__}: {exc}".splitlines()[0][:500]) from None


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


class WireEvent(TypedDict):
    """An `Event`'s fields, in its order: for encoding many events without their models."""

    id: str
    tenant: str
    type: str
    operation: str | None
    timestamp: datetime
    data: dict[str, Any]


_WIRE_EVENT = TypeAdapter(WireEvent)


def encode_fields(fields: WireEvent) -> bytes:
    """`encode(Event(**fields))`, byte for byte, for fields that are already a valid event:
    building the model first costs about four times the encoding."""
    return _WIRE_EVENT.dump_json(fields)
