"""Rate windows and leases that hold limits across replicas."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from common.db.days import on_its_day as on_its_day
from common.db.models.base import Base, when_now
from common.db.types import UtcDateTime


class RateWindow(Base):
    """A subscription's rate-limit window, shared by every dispatcher (migration 0002):
    `granted` requests of the window starting at `window_ms` are handed out already."""

    __tablename__ = "rate_windows"

    subscription_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    granted: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_grant: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class TenantApiLimits(Base):
    """A tenant's own API limits, set by the operator (migration 0010); a null column
    takes the `HOOKLINE_TENANT_*` default. API limits only: delivery pacing lives elsewhere."""

    __tablename__ = "tenant_api_limits"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    ingest_rate_per_s: Mapped[float | None] = mapped_column(Float)
    max_batch_events: Mapped[int | None] = mapped_column(Integer)
    max_handshakes: Mapped[int | None] = mapped_column(Integer)
    replay_rate_per_s: Mapped[float | None] = mapped_column(Float)
    replay_starts_per_min: Mapped[int | None] = mapped_column(Integer)
    max_subscriptions: Mapped[int | None] = mapped_column(Integer)  # migration 0016
    requests_per_s: Mapped[float | None] = mapped_column(Float)  # migration 0016
    max_concurrent_requests: Mapped[int | None] = mapped_column(Integer)  # migration 0017
    updated_at: Mapped[datetime] = when_now()


class ApiRateWindow(Base):
    """A tenant's API rate window (migration 0010), shared by every API replica: `granted`
    units of `name` (`ingest`, `replay_starts`) in the window starting at `window_ms`."""

    __tablename__ = "api_rate_windows"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    granted: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_grant: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class HandshakeLease(Base):
    """A verification handshake in progress for a tenant, on any API replica (migration
    0009); a lease past `expires_at` was left by a process that died and no longer counts."""

    __tablename__ = "api_handshake_leases"
    __table_args__ = (Index("ix_api_handshake_leases_tenant", "tenant_id", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
