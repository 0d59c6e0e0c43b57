"""idempotency keys: stored answers keep their credentials sealed

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:40:00

A stored answer that carried an API key or a webhook secret kept it in clear, which undid
the hashing of keys and the sealing of secrets (issue 14). From now on such fields are
sealed into `secrets_enc` and left out of `body`. Answers stored before hold them in
clear: they are deleted (they only serve repeats of requests made in the last 24 hours).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.add_column(sa.Column("secrets_enc", sa.Text(), nullable=True))
    op.get_bind().execute(
        sa.text("DELETE FROM idempotency_keys WHERE body LIKE :key OR body LIKE :secret"),
        {"key": '%"api_key":%', "secret": '%"secret":%'},
    )


def downgrade() -> None:
    # Sealed fields cannot go back into bodies that expect them in clear: forget those.
    op.execute("DELETE FROM idempotency_keys WHERE secrets_enc IS NOT NULL")
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.drop_column("secrets_enc")
