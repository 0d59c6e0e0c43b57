"""operations: replay jobs and their items

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:15:00

Schema for dead-letter replay and retention (issue 5).
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
