"""The shapes of a tenant's API limits (`/v1/tenants/{id}/limits`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from hookline.api.schemas import MAX_BATCH_EVENTS, Strict

# Far above any tenant's honest need; each bound keeps a counter's arithmetic in range.
MAX_RATE_PER_S = 1_000_000.0


class LimitValues(BaseModel):
    ingest_rate_per_s: float = Field(description="Events accepted per second (single + batch).")
    max_batch_events: int = Field(description="Events in one `POST /v1/events/batch`.")
    max_handshakes: int = Field(description="Verification handshakes in progress at once.")
    replay_rate_per_s: float = Field(description="The fastest replay a tenant key may ask for.")
    replay_starts_per_min: int = Field(description="Replay jobs a tenant key may start a minute.")


class LimitOverrides(Strict):
    """The tenant's own values; null (or absent on creation) means the deployment default."""

    ingest_rate_per_s: float | None = Field(default=None, gt=0, le=MAX_RATE_PER_S)
    max_batch_events: int | None = Field(default=None, ge=1, le=MAX_BATCH_EVENTS)
    max_handshakes: int | None = Field(default=None, ge=1, le=1000)
    replay_rate_per_s: float | None = Field(default=None, gt=0, le=MAX_RATE_PER_S)
    replay_starts_per_min: int | None = Field(default=None, ge=1, le=10_000)


class TenantLimitsOut(BaseModel):
    tenant_id: str
    effective: LimitValues = Field(description="The limits in force.")
    overrides: LimitOverrides = Field(description="The tenant's own values (null: default).")
    defaults: LimitValues = Field(description="The deployment's `HOOKLINE_TENANT_*` values.")
    updated_at: datetime | None
