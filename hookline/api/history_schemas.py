"""What the API shows of what happened: deliveries and the attempts each made (with the
headers they sent), an event with its deliveries, and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from hookline.api.schemas import DeliveryStatus


class SentHeader(BaseModel):
    name: str
    value: str


class AttemptOut(BaseModel):
    attempt: int
    outcome: str
    status_code: int | None
    duration_s: float
    error: str | None
    response_body: str | None
    created_at: datetime
    request_headers: list[SentHeader] | None = Field(
        default=None,
        description="The request headers this attempt sent, in the order sent (its "
        "`header_sets` row, as the portal shows them): each signature and every value of "
        "the subscription's own headers masked. Null when nothing was sent, or for an "
        "attempt made before migration 0014.",
    )


# What a receiver de-duplicates on; an operator finds a receiver's report by it.
WEBHOOK_ID = Field(description="The `webhook-id` header of every request for this event.")


class DeliverySummary(BaseModel):
    id: str
    event_id: str
    webhook_id: str = WEBHOOK_ID
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
