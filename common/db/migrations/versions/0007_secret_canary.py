"""secret canary: a value sealed under HOOKLINE_SECRET_KEY, checked at every start

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:00:00

A process started with another key than the one the stored secrets were sealed with used to
notice only when every delivery died ("cannot decrypt a stored secret"). The services now
open this row when they start and refuse to run if they cannot (`common/db/canary.py`). The
row is written by the first start with a key, not here: a migration may run without one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.db.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secret_canary",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("created_at", common.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_canary")),
    )


def downgrade() -> None:
    op.drop_table("secret_canary")
