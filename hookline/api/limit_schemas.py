"""The shapes of a tenant's API limits (`/v1/tenants/{id}/limits`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from hookline.api.schemas import MAX_BATCH_EVENTS, Strict

# Each bound keeps a counter's arithmetic in range: far above any tenant's honest need, and
# no slower than one a 100 s (a window never longer than that).
MAX_RATE_PER_S = 1_000_000.0
MIN_RATE_PER_S = 0.01


class LimitValues(BaseModel):
    ingest_rate_per_s: float = Field(description="Events accepted per second (single + batch).")
    max_batch_events: int = Field(description="Events in one `POST /v1/events/batch`.")
    max_handshakes: int = Field(description="Verification handshakes in progress at once.")
    replay_rate_per_s: float = Field(description="The fastest replay a tenant key may ask for.")
    replay_starts_per_min: int = Field(description="Replay jobs a tenant key may start a minute.")
    max_subscriptions: int = Field(description="Subscriptions the tenant may have.")
    requests_per_s: float = Field(
        description="Requests a second of the tenant's API keys, to every route but ingest."
    )
    max_concurrent_requests: int = Field(
        description="Requests of the tenant in progress at once in one API process, to every "
        "route but ingest (its keys' and its portal sessions')."
    )


class LimitOverrides(Strict):
    """The tenant's own values; null (or absent on creation) means the deployment default.
    Numbers only (`true` is not 1)."""

    ingest_rate_per_s: float | None = Field(
        default=None, ge=MIN_RATE_PER_S, le=MAX_RATE_PER_S, strict=True
    )
    max_batch_events: int | None = Field(default=None, ge=1, le=MAX_BATCH_EVENTS, strict=True)
    max_handshakes: int | None = Field(default=None, ge=1, le=1000, strict=True)
    replay_rate_per_s: float | None = Field(
        default=None, ge=MIN_RATE_PER_S, le=MAX_RATE_PER_S, strict=True
    )
    replay_starts_per_min: int | None = Field(default=None, ge=1, le=10_000, strict=True)
    max_subscriptions: int | None = Field(default=None, ge=1, le=100_000, strict=True)
    requests_per_s: float | None = Field(
        default=None, ge=MIN_RATE_PER_S, le=MAX_RATE_PER_S, strict=True
    )
    max_concurrent_requests: int | None = Field(default=None, ge=1, le=1000, strict=True)


class TenantLimitsOut(BaseModel):
    tenant_id: str
    effective: LimitValues = Field(description="The limits in force.")
    overrides: LimitOverrides = Field(description="The tenant's own values (null: default).")
    defaults: LimitValues = Field(description="The deployment's `HOOKLINE_TENANT_*` values.")
    updated_at: datetime | None
