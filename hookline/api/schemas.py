"""Request and response bodies of the API: what `/openapi.json` publishes."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from common import payload
from common.instants import InstantError, parse_instant
from common.wire import (
    EVENT_ID_PATTERN,
    EVENT_TYPE_PATTERN,
    OPERATION_PATTERN,
    OWN_TYPE_PREFIX,
    in_utc,
    timestamp_problem,
)

ScopeName = Literal[
    "events:write",
    "subscriptions:read",
    "subscriptions:write",
    "deliveries:read",
    "deliveries:replay",
    "event_types:read",
    "event_types:write",
    "audit:read",
    "portal:mint",
]
ALL_SCOPES: tuple[ScopeName, ...] = get_args(ScopeName)
# A key created without `scopes` may only send events (docs/security.md).
DEFAULT_KEY_SCOPES: tuple[ScopeName, ...] = ("events:write",)
SubscriptionStatus = Literal["pending_verification", "active", "paused", "disabled"]
DeliveryStatus = Literal["pending", "succeeded", "retrying", "dead", "cancelled"]
# Exact dotted names, `prefix.*` (that prefix at any depth) or `*` for every type.
EVENT_PATTERN_PATTERN = r"^(\*|[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*(\.\*)?)$"
EventTypePattern = Annotated[str, StringConstraints(max_length=200, pattern=EVENT_PATTERN_PATTERN)]
OperationName = Annotated[str, StringConstraints(max_length=100, pattern=OPERATION_PATTERN)]
EventType = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=EVENT_TYPE_PATTERN)
]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=EVENT_ID_PATTERN)]


def _not_hooklines_own(value: str) -> str:
    if value.startswith(OWN_TYPE_PREFIX):
        raise PydanticCustomError(
            "reserved_event_type", "types beginning with 'hookline.' are Hookline's own events"
        )
    return value


# What a producer may publish through the API: any type but Hookline's own operational
# events, which a tenant's subscribers act on (`hookline.subscription.disabled`).
PublishedType = Annotated[EventType, AfterValidator(_not_hooklines_own)]


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_8601(value: Any) -> Any:
    # Pydantic also reads numbers (and numeric strings) as Unix times: `until=0.5` would be
    # 1970, where the schema (and every client) means an ISO 8601 date-time.
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE.match(value)):
        return value
    raise PydanticCustomError(
        "datetime_format", "an ISO 8601 date-time with its offset, e.g. 2026-05-01T12:00:00Z"
    )


# Every datetime the API takes (bodies and query parameters): with its offset, and within
# the range once in UTC, which is how it is compared and stored.
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_8601), AfterValidator(in_utc)]


def _recent(value: datetime) -> datetime:
    problem = timestamp_problem(value)
    if problem is not None:
        raise PydanticCustomError("timestamp_skew", "{problem}", {"problem": problem})
    return value


def _instant_or_age(value: Any) -> Any:
    # One parser, and so one set of words, for the API's bounds and the CLI's options.
    if isinstance(value, datetime):
        return value
    try:
        return parse_instant(value if isinstance(value, str) else "")
    except InstantError as exc:
        raise PydanticCustomError("datetime_format", str(exc)) from None


# A query filter's bound (`since`, `until`): an `Instant`, or an age before now (`1h`,
# `30m`, `7d`), the same words the CLI takes (`common.instants`).
TimeBound = Annotated[AwareDatetime, BeforeValidator(_instant_or_age), AfterValidator(in_utc)]


# An event's own time, within a day of the clock (see `common.wire.MAX_EVENT_AGE`).
EventTime = Annotated[Instant, AfterValidator(_recent)]


class Strict(BaseModel):
    """A request body. Unknown fields are refused, so a misspelt option is an error rather
    than ignored; every string, number and nesting in it must be storable (`common.payload`:
    no NUL, finite numbers, bounded depth), so a bad value is a 422 naming its place, not a
    database error later."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable(self) -> Any:
        for name, value in self.__dict__.items():
            if value is not None and not isinstance(value, BaseModel | bool):
                try:
                    payload.check(value, name)
                except payload.UnstorableValue as exc:
                    raise PydanticCustomError(
                        "unstorable", "{problem}", {"problem": str(exc)}
                    ) from None
        return self


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _stripped(value: str) -> str:
    """Surrounding whitespace dropped, after the length was checked on what was sent (the
    schema's bounds are the request's); nothing but whitespace is refused."""
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


class TenantCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_stripped)]


class TenantCreated(BaseModel):
    id: str
    name: str
    api_key: str = Field(description="Shown only in this response; store it now.")


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: datetime


class TenantList(BaseModel):
    data: list[TenantOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class ApiKeyCreate(Strict):
    scopes: list[ScopeName] = Field(
        default_factory=lambda: list(DEFAULT_KEY_SCOPES),
        min_length=1,
        description="Default `events:write` only; name every other scope the key needs.",
    )
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    allowed_cidrs: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list,
        max_length=100,
        description="Source networks the key may be used from (e.g. `203.0.113.0/24`); "
        "empty: anywhere.",
    )

    @field_validator("allowed_cidrs")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        normalised = []
        for cidr in cidrs:
            try:
                normalised.append(str(ipaddress.ip_network(cidr, strict=False)))
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network (e.g. 10.0.0.0/8)") from None
        return list(dict.fromkeys(normalised))


class ApiKeyOut(BaseModel):
    id: str
    tenant_id: str
    name: str | None
    prefix: str = Field(description="The first characters of the key, to recognise it by.")
    scopes: list[ScopeName]
    allowed_cidrs: list[str]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    api_key: str = Field(description="Shown only in this response; store it now.")


class ApiKeyList(BaseModel):
    data: list[ApiKeyOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class EventIn(Strict):
    type: PublishedType
    data: dict[str, Any] = Field(
        description="Any JSON object whose strings (keys too) hold no NUL (\\u0000), whose "
        "integers are in -2^63..2^64-1 and floats finite, nested at most "
        f"{payload.MAX_DEPTH} levels."
    )
    id: EventId | None = Field(
        default=None, description="Unique per tenant; publishing the same id again is a no-op."
    )
    operation: OperationName | None = None
    timestamp: EventTime | None = Field(
        default=None,
        description="When it happened (with its offset), at most 24 h before and 5 min "
        "after the time of ingest; omitted: the time of ingest.",
    )


class EventAccepted(BaseModel):
    id: str


MAX_BATCH_EVENTS = 1000


class EventBatch(BaseModel):
    # Items are checked one by one in the handler, so one bad event does not hide the rest
    # (hence not `Strict`, whose check would refuse the whole batch for one bad item).
    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH_EVENTS,
        description="Up to 1,000 events, each shaped like the body of `POST /v1/events`.",
    )


class BatchItemResult(BaseModel):
    index: int
    status: Literal["accepted", "rejected"]
    id: str | None = Field(description="The event id when accepted.")
    error: ErrorDetail | None = Field(description="Why the event was rejected.")


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItemResult]


class Health(BaseModel):
    status: Literal["ok", "ready"]
