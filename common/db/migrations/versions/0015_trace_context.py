"""trace context: a subscription's opt-in to `traceparent`, and the context an event was
routed in

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 09:00:00

`subscriptions.propagate_trace` (false for every existing subscription): its webhooks
carry the attempt's `traceparent` when the dispatcher traces. `events.traceparent` (null for
every existing event, and whenever the router does not trace): the routing span's W3C
context, which replays of the event's deliveries carry so that they join its trace. Both are
metadata-only changes on PostgreSQL (a nullable column, a constant default), the
partitioned `events` included: no table is rewritten.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(
            sa.Column("propagate_trace", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.add_column("events", sa.Column("traceparent", sa.String(55), nullable=True))


def downgrade() -> None:
    op.drop_column("events", "traceparent")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("propagate_trace")
