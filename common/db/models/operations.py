"""What operators and the API keep: the audit log, idempotency records, replay jobs,
poison messages and the secret key's canary."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from common.db.days import on_its_day as on_its_day
from common.db.models.base import Base, Json, when_now
from common.db.statuses import (
    ReplayItemStatus,
    ReplayJobStatus,
)
from common.db.types import UtcDateTime
from common.wire import utcnow


class AuditEntry(Base):
    """One change made through the API: who (key id or `admin`), what, when, from where."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    resource_type: Mapped[str] = mapped_column(String(32), nullable=False)
    resource_id: Mapped[str | None] = mapped_column(String(200))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False, default=dict)


class IdempotencyRecord(Base):
    """A POST's stored answer, replayed when the same `Idempotency-Key` comes again.

    `scope` is the caller (its API key's id, or `admin`), so keys of different callers never
    meet (rows written before held a digest of the credential, and expire with the TTL);
    a row without `status_code` is a request still in progress. An answer's credentials (an
    API key, a webhook secret) are not in `body` but sealed in `secrets_enc` (migration 0006).
    """

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, str]] = mapped_column(Json, nullable=False, default=dict)
    secrets_enc: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), default=utcnow, nullable=False, index=True
    )


# Replay jobs (operations, migration 0004).


class ReplayJob(Base):
    """One replay request: its filters, its progress, and which runner holds it."""

    __tablename__ = "replay_jobs"
    __table_args__ = (
        Index("ix_replay_jobs_tenant_created", "tenant_id", "created_at"),
        # `GET /v1/replays` for the admin: every tenant's jobs, newest first.
        Index("ix_replay_jobs_created_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64))  # None: across tenants (admin)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    filters: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False, default=dict)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=ReplayJobStatus.RUNNING)
    rate_per_s: Mapped[float | None] = mapped_column(Float)
    total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    skipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    runner: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = when_now()
    updated_at: Mapped[datetime] = when_now()
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ReplayItem(Base):
    """One delivery of a job's fixed set. `base_replay_count` is the delivery's replay count
    when the job started: claiming it bumps the count, so no other job claims it again."""

    __tablename__ = "replay_items"
    __table_args__ = (Index("ix_replay_items_job_state_seq", "job_id", "state", "seq"),)

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    base_replay_count: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=ReplayItemStatus.TODO)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    error: Mapped[str | None] = mapped_column(Text)


class PoisonMessage(Base):
    """A message that could not be decoded, drained from `hookline.poison` to be looked at."""

    __tablename__ = "poison_messages"
    __table_args__ = (Index("ix_poison_messages_received", "received_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)  # when readable
    source_queue: Mapped[str] = mapped_column(String(200), nullable=False)
    routing_key: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, nullable=False)  # utf-8, or base64 (see encoding)
    encoding: Mapped[str] = mapped_column(String(8), nullable=False, default="utf-8")
    headers: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False, default=dict)
    received_at: Mapped[datetime] = when_now()
    resubmitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class SecretCanary(Base):
    """One known text sealed under `HOOKLINE_SECRET_KEY` (migration 0007), so a process with
    the wrong key refuses to start instead of failing on every secret it opens."""

    __tablename__ = "secret_canary"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    token: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = when_now()
