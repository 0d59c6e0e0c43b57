"""control plane: audit log, key and subscription fields, idempotency keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:15:00

Schema for tenants, keys, subscriptions and their audit (issue 4).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")
When = common.db.types.UtcDateTime


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
    with op.batch_alter_table("subscriptions") as batch_op:
        batch_op.add_column(sa.Column("signing_key_enc", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("verified_at", When(timezone=True), nullable=True))
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.create_index(
            "ix_deliveries_tenant_created_id", ["tenant_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_tenant_type_created_id",
            ["tenant_id", "event_type", "created_at", "id"],
            unique=False,
        )
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", When(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=200), nullable=True),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("details", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log") as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)
        batch_op.create_index("ix_audit_log_tenant_at", ["tenant_id", "at"], unique=False)
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("headers", Json, nullable=False),
        sa.Column("created_at", When(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("audit_log")
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.drop_index("ix_deliveries_tenant_type_created_id")
        batch_op.drop_index("ix_deliveries_tenant_created_id")
    with op.batch_alter_table("subscriptions") as batch_op:
        batch_op.drop_column("verified_at")
        batch_op.drop_column("signing_key_enc")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("name")
