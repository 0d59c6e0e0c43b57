"""Events, their deliveries and each attempt (partitioned by day on PostgreSQL), and the
header sets attempts sent."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from common.db.days import on_its_day as on_its_day
from common.db.days import partition_day as _partition_day
from common.db.models.base import Base, Json, when_now
from common.db.statuses import (
    DeliveryStatus,
)
from common.db.types import UtcDateTime
from common.ids import webhook_id_for


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (
        # `GET /v1/events` pages newest first by (received_at, id) within one tenant, and
        # within one type; the id-prefix filter reads the primary key's range on SQLite and
        # this pattern index on PostgreSQL (its text collation cannot serve LIKE 'x%').
        Index("ix_events_tenant_received_id", "tenant_id", "received_at", "id"),
        Index("ix_events_tenant_type_received_id", "tenant_id", "type", "received_at", "id"),
        Index(
            "ix_events_tenant_id_pattern",
            "tenant_id",
            "id",
            postgresql_ops={"id": "varchar_pattern_ops"},
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(200), nullable=False)
    operation: Mapped[str | None] = mapped_column(String(100))
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False)
    received_at: Mapped[datetime] = when_now()
    day: Mapped[date] = _partition_day("id", event=True)
    # Migration 0015: the W3C context the router routed it in, when it traced; replays of
    # its deliveries carry it, so they join the event's trace.
    traceparent: Mapped[str | None] = mapped_column(String(55))


def dead_letter_indexes() -> tuple[Index, ...]:
    where = text("status = 'dead'")
    columns = {
        "ix_deliveries_dead_finished": ("finished_at", "id"),
        "ix_deliveries_dead_tenant_finished": ("tenant_id", "finished_at", "id"),
        "ix_deliveries_dead_subscription_finished": ("subscription_id", "finished_at", "id"),
        "ix_deliveries_dead_tenant_type": ("tenant_id", "event_type", "finished_at", "id"),
        "ix_deliveries_dead_tenant_reason": ("tenant_id", "dead_reason", "subscription_id"),
    }
    return tuple(
        Index(name, *cols, postgresql_where=where, sqlite_where=where)
        for name, cols in columns.items()
    )


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        # The partition key is in every unique constraint on PostgreSQL; `day` is the
        # event's day, one per (tenant, event), so this is still one delivery per pair.
        UniqueConstraint("tenant_id", "event_id", "subscription_id", "day"),
        Index("ix_deliveries_tenant_status_created", "tenant_id", "status", "created_at"),
        Index("ix_deliveries_subscription_created", "subscription_id", "created_at"),
        # The deliveries API pages newest first by (created_at, id) within one tenant.
        Index("ix_deliveries_tenant_created_id", "tenant_id", "created_at", "id"),
        Index(
            "ix_deliveries_tenant_type_created_id", "tenant_id", "event_type", "created_at", "id"
        ),
        # Dead letters (operations, migration 0004): partial, so they stay small beside the
        # millions of finished rows, and ordered as `dlq list` pages (newest death first).
        *dead_letter_indexes(),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    event_id: Mapped[str] = mapped_column(String(200), nullable=False)
    subscription_id: Mapped[str] = mapped_column(String(64), nullable=False)
    event_type: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_reason: Mapped[str | None] = mapped_column(String(64))
    replay_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = when_now()
    updated_at: Mapped[datetime] = when_now()
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    day: Mapped[date] = _partition_day("id")

    @property
    def webhook_id(self) -> str:
        """The `webhook-id` its requests carry (derived, not stored)."""
        return webhook_id_for(self.tenant_id, self.event_id)


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    delivery_id: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)
    # When the request was signed: its `webhook-timestamp` is this in whole seconds (when
    # nothing was sent, when the attempt began).
    created_at: Mapped[datetime] = when_now()
    day: Mapped[date] = _partition_day("delivery_id")
    # The headers the request went out with (a `HeaderSet`, migration 0014); None when
    # nothing was sent, or for an attempt recorded before 0014.
    header_set_id: Mapped[int | None] = mapped_column(Integer)


class HeaderSet(Base):
    """One shape of request headers, shared by every attempt sent with it (migration 0014):
    the header names in the order sent, with the values that are the same on every request
    of that shape (content-type, user-agent, the signature's schemes) and null for the ones
    that are not kept (a subscription's own header values: they may be credentials) or are
    the attempt's own (webhook-id: its delivery's `webhook_id`; webhook-timestamp: the
    attempt's time).

    An attempt stores the set's id, not the headers: a few bytes per attempt, and the few
    shapes a deployment sends are written once (`dispatcher/settle/header_sets.py`)."""

    __tablename__ = "header_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # SHA-256 of `headers` as canonical JSON: the same shape is one row, whoever writes it.
    digest: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    headers: Mapped[list[list[str | None]]] = mapped_column(Json, nullable=False)
    created_at: Mapped[datetime] = when_now()
