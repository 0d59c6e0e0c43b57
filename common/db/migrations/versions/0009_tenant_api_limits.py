"""tenant API limits: per-tenant overrides, shared rate windows, handshake leases

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 19:15:00

Issue 15: limits on what one tenant may ask of the API, held across API replicas.
`tenant_api_limits` keeps the operator's overrides (null: the `HOOKLINE_TENANT_*`
default), `api_rate_windows` the fixed-window counters every replica claims from, and
`api_handshake_leases` the verification handshakes in progress.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.db.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_api_limits",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("ingest_rate_per_s", sa.Float(), nullable=True),
        sa.Column("max_batch_events", sa.Integer(), nullable=True),
        sa.Column("max_handshakes", sa.Integer(), nullable=True),
        sa.Column("replay_rate_per_s", sa.Float(), nullable=True),
        sa.Column("replay_starts_per_min", sa.Integer(), nullable=True),
        sa.Column("updated_at", common.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_tenant_api_limits_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_api_limits")),
    )
    op.create_table(
        "api_rate_windows",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("window_ms", sa.BigInteger(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("last_grant", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name=op.f("pk_api_rate_windows")),
    )
    op.create_table(
        "api_handshake_leases",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", common.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_handshake_leases")),
    )
    op.create_index(
        "ix_api_handshake_leases_tenant", "api_handshake_leases", ["tenant_id", "expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_api_handshake_leases_tenant", table_name="api_handshake_leases")
    op.drop_table("api_handshake_leases")
    op.drop_table("api_rate_windows")
    op.drop_table("tenant_api_limits")
