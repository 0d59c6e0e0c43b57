"""operations: replay jobs and their items

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:15:00

Schema for dead-letter replay and retention (issue 5): replay jobs with their fixed set of
items, the poison messages drained from `hookline.poison`, and partial indexes over dead
deliveries for the dead-letter filters.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")
When = common.db.types.UtcDateTime
DEAD = sa.text("status = 'dead'")
DEAD_INDEXES = {
    "ix_deliveries_dead_finished": ["finished_at", "id"],
    "ix_deliveries_dead_tenant_finished": ["tenant_id", "finished_at", "id"],
    "ix_deliveries_dead_subscription_finished": ["subscription_id", "finished_at", "id"],
    "ix_deliveries_dead_tenant_type": ["tenant_id", "event_type", "finished_at", "id"],
    "ix_deliveries_dead_tenant_reason": ["tenant_id", "dead_reason", "subscription_id"],
}


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        for name, columns in DEAD_INDEXES.items():
            batch_op.create_index(name, columns, postgresql_where=DEAD, sqlite_where=DEAD)
    op.create_table(
        "replay_jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("filters", Json, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rate_per_s", sa.Float(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("runner", sa.String(length=64), nullable=True),
        sa.Column("heartbeat_at", When(timezone=True), nullable=True),
        sa.Column("created_at", When(timezone=True), nullable=False),
        sa.Column("updated_at", When(timezone=True), nullable=False),
        sa.Column("finished_at", When(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replay_jobs")),
    )
    op.create_index("ix_replay_jobs_tenant_created", "replay_jobs", ["tenant_id", "created_at"])
    op.create_table(
        "replay_items",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("base_replay_count", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("claimed_at", When(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "delivery_id", name=op.f("pk_replay_items")),
    )
    op.create_index("ix_replay_items_job_state_seq", "replay_items", ["job_id", "state", "seq"])
    op.create_table(
        "poison_messages",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("source_queue", sa.String(length=200), nullable=False),
        sa.Column("routing_key", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("encoding", sa.String(length=8), nullable=False),
        sa.Column("headers", Json, nullable=False),
        sa.Column("received_at", When(timezone=True), nullable=False),
        sa.Column("resubmitted_at", When(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_poison_messages")),
    )
    op.create_index("ix_poison_messages_received", "poison_messages", ["received_at", "id"])
    op.create_index(op.f("ix_poison_messages_tenant_id"), "poison_messages", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("poison_messages")
    op.drop_table("replay_items")
    op.drop_table("replay_jobs")
    with op.batch_alter_table("deliveries") as batch_op:
        for name in DEAD_INDEXES:
            batch_op.drop_index(name)
