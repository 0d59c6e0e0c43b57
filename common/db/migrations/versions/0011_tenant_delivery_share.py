"""tenants: delivery_share_per_s, a tenant's own fair share of delivery (issue 15)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 19:40:00

Deliveries per second the tenant routes to its own delivery shard (per router process)
before the rest spill to the overflow shard; NULL: HOOKLINE_DELIVERY_SHARE_PER_S; 0: never
spill. Named for delivery: the tenants table also carries the API's own per-tenant limits.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("delivery_share_per_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("delivery_share_per_s")
