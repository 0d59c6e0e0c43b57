"""Request and response bodies of the API: what `/openapi.json` publishes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from common.wire import EVENT_ID_PATTERN, EVENT_TYPE_PATTERN, OPERATION_PATTERN

ScopeName = Literal[
    "events:write",
    "subscriptions:read",
    "subscriptions:write",
    "deliveries:read",
    "deliveries:replay",
]
ALL_SCOPES: tuple[ScopeName, ...] = get_args(ScopeName)
SubscriptionStatus = Literal["pending_verification", "active", "paused", "disabled"]
DeliveryStatus = Literal["pending", "succeeded", "retrying", "dead", "cancelled"]
# Exact dotted names, `prefix.*` (that prefix at any depth) or `*` for every type.
EVENT_PATTERN_PATTERN = r"^(\*|[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*(\.\*)?)$"
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers Hookline sets itself: a subscription may not override the signature or framing.
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "connection", "transfer-encoding",
     "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature"}
)  # fmt: skip

EventTypePattern = Annotated[str, StringConstraints(max_length=200, pattern=EVENT_PATTERN_PATTERN)]
OperationName = Annotated[str, StringConstraints(max_length=100, pattern=OPERATION_PATTERN)]
EventType = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=EVENT_TYPE_PATTERN)
]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=EVENT_ID_PATTERN)]


class Strict(BaseModel):
    """Unknown fields are refused, so a misspelt option is an error rather than ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class TenantCreate(Strict):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class TenantCreated(BaseModel):
    id: str
    name: str
    api_key: str = Field(description="Shown only in this response; store it now.")


class ApiKeyCreate(Strict):
    scopes: list[ScopeName] = Field(default_factory=lambda: list(ALL_SCOPES), min_length=1)


class ApiKeyCreated(BaseModel):
    id: str
    api_key: str = Field(description="Shown only in this response; store it now.")
    scopes: list[ScopeName]


class SubscriptionCreate(Strict):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    event_types: list[EventTypePattern] = Field(min_length=1, max_length=100)
    operations: list[OperationName] = Field(default_factory=list, max_length=100)
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=100_000)
    max_in_flight: int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("headers")
    @classmethod
    def _headers_are_sendable(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Hookline and cannot be overridden")
            if any(ch in value for ch in "\r\n\0") or len(value) > 4096:
                raise ValueError(f"header {name!r} has a value that cannot be sent")
        return headers


class SubscriptionOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    operations: list[str]
    header_names: list[str] = Field(
        description="Names of the static headers sent with every webhook; values stay secret."
    )
    description: str | None
    metadata: dict[str, Any]
    rate_limit_per_s: float | None
    max_in_flight: int | None
    status: SubscriptionStatus
    created_at: datetime
    updated_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(
        description="The signing secret (`whsec_...`), shown only in this response."
    )


class SubscriptionList(BaseModel):
    data: list[SubscriptionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class EventIn(Strict):
    type: EventType
    data: dict[str, Any]
    id: EventId | None = Field(
        default=None, description="Unique per tenant; publishing the same id again is a no-op."
    )
    operation: OperationName | None = None
    timestamp: AwareDatetime | None = None


class EventAccepted(BaseModel):
    id: str


class AttemptOut(BaseModel):
    attempt: int
    outcome: str
    status_code: int | None
    duration_s: float
    error: str | None
    response_body: str | None
    created_at: datetime


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    subscription_id: str
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    dead_reason: str | None
    replay_count: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptOut]


class Health(BaseModel):
    status: Literal["ok", "ready"]
