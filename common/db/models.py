"""The relational model (SQLAlchemy 2). Alembic migrations in `migrations/` mirror it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db.days import on_its_day as on_its_day
from common.db.days import partition_day as _partition_day
from common.db.statuses import (
    DeliveryStatus,
    ReplayItemStatus,
    ReplayJobStatus,
    SchemaValidation,
    SubscriptionStatus,
)
from common.db.types import UtcDateTime
from common.wire import utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSON(none_as_null=True), "postgresql")


def _when() -> Mapped[datetime]:
    return mapped_column(UtcDateTime(), default=utcnow, nullable=False)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = _when()
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
    created_at: Mapped[datetime] = _when()
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
    dedupe_key: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = _when()
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
    updated_at: Mapped[datetime] = _when()


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
    created_at: Mapped[datetime] = _when()
    updated_at: Mapped[datetime] = _when()


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
    updated_at: Mapped[datetime] = _when()


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
    received_at: Mapped[datetime] = _when()
    day: Mapped[date] = _partition_day("id", event=True)


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
    created_at: Mapped[datetime] = _when()
    updated_at: Mapped[datetime] = _when()
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    day: Mapped[date] = _partition_day("id")


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
    created_at: Mapped[datetime] = _when()
    day: Mapped[date] = _partition_day("delivery_id")
    # The headers the request went out with (a `HeaderSet`, migration 0014); None when
    # nothing was sent, or for an attempt recorded before 0014.
    header_set_id: Mapped[int | None] = mapped_column(Integer)


class HeaderSet(Base):
    """One shape of request headers, shared by every attempt sent with it (migration 0014):
    the header names in the order sent, with the values that are the same on every request
    of that shape (content-type, user-agent, the signature's schemes) and null for the ones
    that are not kept (a subscription's own header values: they may be credentials) or are
    the attempt's own (webhook-id: the event id; webhook-timestamp: the attempt's time).

    An attempt stores the set's id, not the headers: a few bytes per attempt, and the few
    shapes a deployment sends are written once (`dispatcher/settle/header_sets.py`)."""

    __tablename__ = "header_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # SHA-256 of `headers` as canonical JSON: the same shape is one row, whoever writes it.
    digest: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    headers: Mapped[list[list[str | None]]] = mapped_column(Json, nullable=False)
    created_at: Mapped[datetime] = _when()


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

    `scope` is a digest of the caller's credential, so keys of different callers never meet;
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
    created_at: Mapped[datetime] = _when()
    updated_at: Mapped[datetime] = _when()
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
    received_at: Mapped[datetime] = _when()
    resubmitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class SecretCanary(Base):
    """One known text sealed under `HOOKLINE_SECRET_KEY` (migration 0007), so a process with
    the wrong key refuses to start instead of failing on every secret it opens."""

    __tablename__ = "secret_canary"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    token: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _when()


class PortalLink(Base):
    """A signed-in link to the receivers' portal for one tenant's customer (migration 0013):
    only the token's SHA-256 is kept. A link is exchanged once for a session; revoking the
    link ends its session too."""

    __tablename__ = "portal_links"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True, nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)  # read | manage
    # Empty: every subscription of the tenant; else only these (a "customer").
    subscription_ids: Mapped[list[str]] = mapped_column(Json, nullable=False, default=list)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = _when()
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The session's cookie value, hashed; set when the link is exchanged.
    session_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The customer signed out (migration 0014): the session ends as if revoked.
    signed_out_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class PortalTheme(Base):
    """A tenant's portal look and embedding rule (migration 0013)."""

    __tablename__ = "portal_themes"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(80))
    logo_url: Mapped[str | None] = mapped_column(String(500))
    primary_color: Mapped[str | None] = mapped_column(String(7))
    # CSP `frame-ancestors` origins; empty: 'none' (the portal may not be framed).
    frame_ancestors: Mapped[list[str]] = mapped_column(Json, nullable=False, default=list)
    updated_at: Mapped[datetime] = _when()


# A dispatcher writes its `dispatchers` row this often while it delivers; the portal counts
# a dispatcher whose row is older than `DISPATCHER_LIVE_S` as gone, and its circuits with it.
DISPATCHER_HEARTBEAT_S = 10.0
DISPATCHER_LIVE_S = 45.0


class DispatcherRow(Base):
    """A dispatcher that is delivering (migration 0014), by its heartbeat."""

    __tablename__ = "dispatchers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # host:pid:random
    started_at: Mapped[datetime] = _when()
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, index=True)


class CircuitState(Base):
    """An endpoint circuit that is open in one dispatcher's breaker (migration 0014); a
    closed circuit has no row. Written by the dispatcher off the delivery path
    (`dispatcher/policy/admission/circuits.py`), read by the portal with the heartbeats."""

    __tablename__ = "circuit_states"

    # The portal reads one subscription's rows: the key leads with it.
    subscription_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dispatcher_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Open since (through its re-opens), and when it lets a probe out: past that the
    # circuit is half-open, and the endpoint's next delivery is the probe.
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    probe_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
