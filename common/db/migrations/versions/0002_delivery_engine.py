"""delivery engine: circuit and rate-limit state, auto-disable counters

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:15:00

Schema for per-endpoint isolation and auto-disable (issue 3).
"""

from __future__ import annotations

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
