"""The receivers' portal: links and themes; the dispatchers and the circuit states they
report for it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from common.db.days import on_its_day as on_its_day
from common.db.models.base import Base, Json, when_now
from common.db.types import UtcDateTime


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
    created_at: Mapped[datetime] = when_now()
    # Indexed (migration 0016) for the deletion of long-expired links (`portal_links.sweep`).
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, index=True)
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
    updated_at: Mapped[datetime] = when_now()


# A dispatcher writes its `dispatchers` row this often while it delivers; the portal counts
# a dispatcher whose row is older than `DISPATCHER_LIVE_S` as gone, and its circuits with it.
DISPATCHER_HEARTBEAT_S = 10.0


DISPATCHER_LIVE_S = 45.0


class DispatcherRow(Base):
    """A dispatcher that is delivering (migration 0014), by its heartbeat."""

    __tablename__ = "dispatchers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # host:pid:random
    started_at: Mapped[datetime] = when_now()
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
