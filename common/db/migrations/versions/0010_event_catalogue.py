"""event-type catalogue, tenant settings, and the indexes of the new list routes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 19:05:00

Issue 16: `event_types` (a tenant's catalogue; one row per name and tenant), the
`tenant_settings` its ingest check and subscription rule read, and the indexes that let
`GET /v1/events` (newest first, by type, by id prefix) and `GET /v1/replays` (the admin's
view across tenants) read one page of index rather than the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.db.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")
When = common.db.types.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "tenant_settings",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("schema_validation", sa.String(length=8), nullable=False),
        sa.Column("require_catalogued_types", sa.Boolean(), nullable=False),
        sa.Column("updated_at", When(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_tenant_settings_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_settings")),
    )
    op.create_table(
        "event_types",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("group_name", sa.String(length=100), nullable=True),
        sa.Column("data_schema", Json, nullable=True),
        sa.Column("examples", Json, nullable=False),
        sa.Column("deprecated", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", When(timezone=True), nullable=False),
        sa.Column("updated_at", When(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_event_types_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_types")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_event_types_tenant_id")),
    )
    op.create_index(
        "ix_event_types_tenant_created_id", "event_types", ["tenant_id", "created_at", "id"]
    )
    op.create_index("ix_events_tenant_received_id", "events", ["tenant_id", "received_at", "id"])
    op.create_index(
        "ix_events_tenant_type_received_id", "events", ["tenant_id", "type", "received_at", "id"]
    )
    op.create_index(
        "ix_events_tenant_id_pattern", "events", ["tenant_id", "id"],
        postgresql_ops={"id": "varchar_pattern_ops"},
    )  # fmt: skip
    op.create_index("ix_replay_jobs_created_id", "replay_jobs", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_replay_jobs_created_id", table_name="replay_jobs")
    op.drop_index("ix_events_tenant_id_pattern", table_name="events")
    op.drop_index("ix_events_tenant_type_received_id", table_name="events")
    op.drop_index("ix_events_tenant_received_id", table_name="events")
    op.drop_index("ix_event_types_tenant_created_id", table_name="event_types")
    op.drop_table("event_types")
    op.drop_table("tenant_settings")
