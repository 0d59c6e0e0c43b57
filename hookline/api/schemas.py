"""Request and response bodies of the API: what `/openapi.json` publishes."""

from __future__ import annotations

import ipaddress
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
    type: EventType
    data: dict[str, Any]
    id: EventId | None = Field(
        default=None, description="Unique per tenant; publishing the same id again is a no-op."
    )
    operation: OperationName | None = None
    timestamp: AwareDatetime | None = None


class EventAccepted(BaseModel):
    id: str


MAX_BATCH_EVENTS = 1000


class EventBatch(Strict):
    # Items are checked one by one in the handler, so one bad event does not hide the rest.
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


class AttemptOut(BaseModel):
    attempt: int
    outcome: str
    status_code: int | None
    duration_s: float
    error: str | None
    response_body: str | None
    created_at: datetime


class DeliverySummary(BaseModel):
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


class DeliveryOut(DeliverySummary):
    attempts: list[AttemptOut]


class DeliveryList(BaseModel):
    data: list[DeliverySummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class EventDetail(BaseModel):
    id: str
    type: str
    operation: str | None
    timestamp: datetime
    received_at: datetime
    data: dict[str, Any]
    deliveries: list[DeliverySummary]


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="The API key id, or `admin` for the operator's token.")
    tenant_id: str | None
    action: str = Field(examples=["subscription.created"])
    resource_type: str
    resource_id: str | None
    source_ip: str | None
    details: dict[str, Any]


class AuditList(BaseModel):
    data: list[AuditEntryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class Health(BaseModel):
    status: Literal["ok", "ready"]
