"""Tenants, their keys, settings, subscriptions and event-type catalogue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from common.db.days import on_its_day as on_its_day
from common.db.models.base import Base, Json, when_now
from common.db.statuses import (
    SchemaValidation,
    SubscriptionStatus,
)
from common.db.types import UtcDateTime
from common.wire import utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = when_now()
    # Fair delivery (architecture §3): deliveries per second routed to the tenant's own
    # shard before the rest spill to overflow; None: the setting's default, 0: never spill.
    delivery_share_per_s: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True, nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    name: Mapped[str | None] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(Json, nullable=False, default=list)
    allowed_cidrs: Mapped[list[str]] = mapped_column(Json, nullable=False, default=list)
    created_at: Mapped[datetime] = when_now()
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("tenant_id", "dedupe_key"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True, nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    event_types: Mapped[list[str]] = mapped_column(Json, nullable=False)
    operations: Mapped[list[str]] = mapped_column(Json, nullable=False, default=list)
    payload_filter: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # Fernet tokens of `whsec_...` secrets; the previous one signs too until it expires.
    secret_enc: Mapped[str] = mapped_column(Text, nullable=False)
    previous_secret_enc: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Fernet token of a `whsk_...` ed25519 key when the subscription also signs with `v1a`.
    signing_key_enc: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    headers: Mapped[dict[str, str]] = mapped_column(Json, nullable=False, default=dict)
    rate_limit_per_s: Mapped[float | None] = mapped_column(Float)
    max_in_flight: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", Json, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(
        String(32), nullable=False, default=SubscriptionStatus.ACTIVE
    )
    # Delivery engine (migration 0002): why Hookline disabled it, and the failure streak
    # that auto-disable watches (every attempt failed since `failing_since`).
    disabled_reason: Mapped[str | None] = mapped_column(String(32))
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime())
    consecutive_dead: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Migration 0015: its webhooks carry the attempt's W3C `traceparent` (when traced). The
    # database's default, not the ORM's: a row written without it (code from before 0015,
    # migrations' own tests at older revisions) leaves the column out of the INSERT.
    propagate_trace: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    dedupe_key: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = when_now()
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), default=utcnow, onupdate=utcnow, nullable=False, index=True
    )


class TenantSettings(Base):
    """A tenant's catalogue settings (issue 16); a tenant without a row has the defaults.
    A table of its own, so the settings' readers (every API process's schema cache) and
    the tenant row's other columns never get in each other's way."""

    __tablename__ = "tenant_settings"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    schema_validation: Mapped[str] = mapped_column(
        String(8), nullable=False, default=SchemaValidation.OFF
    )
    require_catalogued_types: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    updated_at: Mapped[datetime] = when_now()


class EventTypeEntry(Base):
    """One event type of a tenant's catalogue: what it means, and the JSON Schema of its
    `data`. `version` grows with every change, so a compiled validator is known stale."""

    __tablename__ = "event_types"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        Index("ix_event_types_tenant_created_id", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    group: Mapped[str | None] = mapped_column("group_name", String(100))
    data_schema: Mapped[dict[str, Any] | None] = mapped_column(Json)
    examples: Mapped[list[dict[str, Any]]] = mapped_column(Json, nullable=False, default=list)
    deprecated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = when_now()
    updated_at: Mapped[datetime] = when_now()
