"""delivery engine: circuit and rate-limit state, auto-disable counters

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:15:00

Schema for per-endpoint isolation and auto-disable (issue 3): the shared rate-limit windows,
and on each subscription why Hookline disabled it and the failure streak it watches.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_windows",
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("window_ms", sa.BigInteger(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("last_grant", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_rate_windows")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("failing_since", common.db.types.UtcDateTime(timezone=True), nullable=True)
        )
        # The server default fills the rows that exist already.
        batch_op.add_column(
            sa.Column("consecutive_dead", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("consecutive_dead")
        batch_op.drop_column("failing_since")
        batch_op.drop_column("disabled_reason")
    op.drop_table("rate_windows")
