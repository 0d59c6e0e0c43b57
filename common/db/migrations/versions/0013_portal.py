"""portal: links (token hashes) and sessions of the receivers' portal, and tenant themes

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 19:50:00

The portal (`/portal`) is opened with a short-lived link a tenant or the admin mints
(`POST /v1/portal/links`); the link's token and the session cookie it is exchanged for are
stored as SHA-256 only. `portal_themes` holds a tenant's name, logo, colour and the origins
allowed to frame the portal.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.db.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

When = common.db.types.UtcDateTime
Json = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "portal_links",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subscription_ids", Json, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", When(timezone=True), nullable=False),
        sa.Column("expires_at", When(timezone=True), nullable=False),
        sa.Column("used_at", When(timezone=True), nullable=True),
        sa.Column("session_hash", sa.String(64), nullable=True),
        sa.Column("revoked_at", When(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_portal_links_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_portal_links_token_hash")),
        sa.UniqueConstraint("session_hash", name=op.f("uq_portal_links_session_hash")),
    )
    op.create_index(op.f("ix_portal_links_tenant_id"), "portal_links", ["tenant_id"])
    op.create_table(
        "portal_themes",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(80), nullable=True),
        sa.Column("logo_url", sa.String(500), nullable=True),
        sa.Column("primary_color", sa.String(7), nullable=True),
        sa.Column("frame_ancestors", Json, nullable=False),
        sa.Column("updated_at", When(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_portal_themes_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_portal_themes")),
    )


def downgrade() -> None:
    op.drop_table("portal_themes")
    op.drop_index(op.f("ix_portal_links_tenant_id"), table_name="portal_links")
    op.drop_table("portal_links")
