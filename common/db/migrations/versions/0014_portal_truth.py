"""portal truth: the headers each attempt was sent with, circuit states, signing out

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 22:00:00

Issue 16's last gaps. `attempts.header_set_id` names the `header_sets` row of the headers
the attempt's request went out with (names, and the values that carry nothing secret);
null when nothing was sent, and for every attempt before this revision. On PostgreSQL the
column is added to the partitioned table, and so to every partition, without a rewrite
(a nullable column without a default). `dispatchers` holds the heartbeat of each
dispatcher that is delivering, `circuit_states` the endpoint circuits open in its
breaker. `portal_links.signed_out_at` ends a portal session when its customer signs out.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.db.types

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

When = common.db.types.UtcDateTime
Json = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "header_sets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("headers", Json, nullable=False),
        sa.Column("created_at", When(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_header_sets")),
        sa.UniqueConstraint("digest", name=op.f("uq_header_sets_digest")),
    )
    op.add_column("attempts", sa.Column("header_set_id", sa.Integer(), nullable=True))
    op.create_table(
        "dispatchers",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("started_at", When(timezone=True), nullable=False),
        sa.Column("seen_at", When(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatchers")),
    )
    op.create_index(op.f("ix_dispatchers_seen_at"), "dispatchers", ["seen_at"])
    op.create_table(
        "circuit_states",
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("dispatcher_id", sa.String(100), nullable=False),
        sa.Column("opened_at", When(timezone=True), nullable=False),
        sa.Column("probe_at", When(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "dispatcher_id", name=op.f("pk_circuit_states")),
    )
    op.add_column("portal_links", sa.Column("signed_out_at", When(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("portal_links") as batch:
        batch.drop_column("signed_out_at")
    op.drop_table("circuit_states")
    op.drop_index(op.f("ix_dispatchers_seen_at"), table_name="dispatchers")
    op.drop_table("dispatchers")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("attempts", "header_set_id")
    else:
        with op.batch_alter_table("attempts") as batch:
            batch.drop_column("header_set_id")
    op.drop_table("header_sets")
