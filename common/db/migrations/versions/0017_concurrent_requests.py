"""a tenant's cap on its requests in progress at once in an API process

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 12:30:00

`tenant_api_limits.max_concurrent_requests` (null for every existing row: the deployment's
`HOOKLINE_TENANT_MAX_CONCURRENT_REQUESTS`). A nullable column without a default: a change of
the catalogue only, no table rewritten.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tenant_api_limits", sa.Column("max_concurrent_requests", sa.Integer(), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("tenant_api_limits") as batch:
        batch.drop_column("max_concurrent_requests")
