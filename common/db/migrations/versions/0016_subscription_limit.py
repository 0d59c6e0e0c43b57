"""a tenant's cap on its subscriptions, and on its API requests a second; expired portal
links found by their expiry

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 09:45:00

`tenant_api_limits.max_subscriptions` and `.requests_per_s` (null for every existing row:
the deployment's `HOOKLINE_TENANT_MAX_SUBSCRIPTIONS` and `HOOKLINE_TENANT_REQUESTS_PER_S`).
Nullable columns without a default: a change of the catalogue only, no table rewritten.
`ix_portal_links_expires_at`: long-expired links are deleted oldest first (a table that
holds about two days of links).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenant_api_limits", sa.Column("max_subscriptions", sa.Integer(), nullable=True))
    op.add_column("tenant_api_limits", sa.Column("requests_per_s", sa.Float(), nullable=True))
    op.create_index("ix_portal_links_expires_at", "portal_links", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_portal_links_expires_at", table_name="portal_links")
    with op.batch_alter_table("tenant_api_limits") as batch:
        batch.drop_column("requests_per_s")
        batch.drop_column("max_subscriptions")
