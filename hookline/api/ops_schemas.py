"""Request and response bodies of the operations routes: dead letters, poison, replays."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from hookline.api.history_schemas import WEBHOOK_ID, AttemptOut
from hookline.api.limit_schemas import MIN_RATE_PER_S
from hookline.api.schemas import Strict, TimeBound

StatusClass = Literal["1xx", "2xx", "3xx", "4xx", "5xx", "none"]
JobState = Literal["running", "completed", "cancelling", "cancelled", "failed"]
DeliveryId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_IDS = 10_000


_Strict = Strict  # unknown fields refused, every value storable


class DeadLetterOut(BaseModel):
    id: str
    tenant_id: str
    event_id: str
    webhook_id: str = WEBHOOK_ID
    subscription_id: str
    event_type: str
    reason: str | None
    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    replay_count: int
    created_at: datetime
    died_at: datetime | None


class DeadLetterPage(BaseModel):
    data: list[DeadLetterOut]
    next_cursor: str | None


class DeadLetterSummary(BaseModel):
    total: int
    by_reason: dict[str, int]
    by_subscription: dict[str, int]
    sample_ids: list[str]


class EventOut(BaseModel):
    id: str
    type: str
    operation: str | None
    timestamp: datetime
    data: dict[str, Any]


class DeadLetterDetail(DeadLetterOut):
    event: EventOut | None
    attempts: list[AttemptOut]
    headers: dict[str, str] = Field(
        description="The newest attempt's `request_headers` as an object (kept for older "
        "clients; each attempt has its own). Empty when no attempt recorded any."
    )


class PoisonOut(BaseModel):
    id: str
    tenant_id: str | None
    source_queue: str
    reason: str
    error: str | None
    body: str
    encoding: Literal["utf-8", "base64"]
    received_at: datetime
    resubmitted_at: datetime | None


class PoisonPage(BaseModel):
    data: list[PoisonOut]
    next_cursor: str | None


class ReplayCreate(_Strict):
    """A replay from filters (the same words as `GET /v1/dead-letters`) or explicit ids."""

    subscription_id: str | None = None
    event_type: str | None = None
    reason: str | None = None
    status_class: StatusClass | None = None
    since: TimeBound | None = None
    until: TimeBound | None = None
    ids: list[DeliveryId] = Field(default_factory=list, max_length=MAX_IDS)
    tenant: str | None = Field(default=None, description="Admin token only: one tenant.")
    dry_run: bool = False
    all: bool = Field(default=False, description="Required to replay without any filter.")
    force: bool = Field(
        default=False, description="Replay deliveries of paused or disabled subscriptions too."
    )
    # The runner waits a batch's size / rate after each batch: at 1e-300 that wait overflowed
    # and the accepted job failed. The floor is the tenant limits' (one copy a 100 s).
    rate_per_s: float | None = Field(
        default=50.0,
        ge=MIN_RATE_PER_S,
        description="Copies published per second, at least 0.01; null for unlimited (with an "
        "API key: at most HOOKLINE_REPLAY_MAX_RATE_PER_S, which null means).",
    )


class PurgeRequest(_Strict):
    """Dead letters to drop (they become `cancelled`), by the filters of the listing."""

    subscription_id: str | None = Field(default=None, max_length=64)
    event_type: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=64)
    status_class: StatusClass | None = None
    since: TimeBound | None = None
    until: TimeBound | None = None
    tenant: str | None = Field(default=None, max_length=64, description="Admin token only.")
    dry_run: bool = False
    all: bool = Field(default=False, description="Required to purge without any filter.")


class PoisonPurgeRequest(_Strict):
    """Poison messages to delete, by the filters of their listing."""

    source_queue: str | None = Field(default=None, max_length=200)
    since: TimeBound | None = None
    until: TimeBound | None = None
    tenant: str | None = Field(
        default=None,
        max_length=64,
        description="Admin token only: one tenant's (a message no tenant can be read from "
        "is the admin token's alone).",
    )
    dry_run: bool = False
    all: bool = Field(default=False, description="Required to purge without any filter.")


class PurgeOut(BaseModel):
    matched: int
    purged: int
    dry_run: bool


class RecoverRequest(_Strict):
    since: TimeBound
    until: TimeBound | None = None
    dry_run: bool = False
    force: bool = False
    rate_per_s: float | None = Field(default=50.0, ge=MIN_RATE_PER_S)  # as ReplayCreate's


class ReplayOptions(_Strict):
    force: bool = False


class ReplayPlanOut(BaseModel):
    dry_run: Literal[True] = True
    total: int
    by_reason: dict[str, int]
    by_subscription: dict[str, int]
    sample_ids: list[str]
    paused: dict[str, int]
    disabled: dict[str, int]
    note: str


class ReplayJobOut(BaseModel):
    id: str
    state: JobState
    tenant_id: str | None
    actor: str
    filters: dict[str, Any]
    rate_per_s: float | None
    total: int
    done: int
    failed: int
    skipped: int
    todo: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    note: str | None = None
