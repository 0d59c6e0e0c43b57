"""subscriptions: static header values sealed like secrets

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:30:00

A subscription's static headers often carry a credential the receiver issued; their values
were stored in clear. From now on each value is a Fernet token under HOOKLINE_SECRET_KEY
(names stay plain: the API lists them). This seals the values already stored, with the key
`hookline migrate` was given (or HOOKLINE_SECRET_KEY, else the dev key), after checking that
the key opens a secret already stored. Dispatchers of the previous version read the tokens
as values: roll the new version out right after migrating (their caches keep plain values
for at most five minutes).
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context, op

from common.db.canary import WRONG_KEY
from common.errors import ConfigurationError
from common.secretbox import DEV_SECRET_KEY, SecretBox, is_sealed

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BATCH = 500
subscriptions = sa.table(
    "subscriptions", sa.column("id", sa.String), sa.column("secret_enc", sa.Text),
    sa.column("headers", sa.JSON),
)  # fmt: skip


def _box() -> SecretBox:
    key = context.config.attributes.get("secret_key") or os.environ.get("HOOKLINE_SECRET_KEY")
    return SecretBox(key or DEV_SECRET_KEY)


def _rewrite(seal: bool) -> None:
    bind = op.get_bind()
    box: SecretBox | None = None
    after = ""
    while True:
        rows = bind.execute(
            sa.select(subscriptions.c.id, subscriptions.c.secret_enc, subscriptions.c.headers)
            .where(subscriptions.c.id > after)
            .order_by(subscriptions.c.id)
            .limit(BATCH)
        ).all()
        for row_id, secret_enc, headers in rows:
            if box is None:
                box = _box()
                try:
                    box.open(secret_enc)
                except ConfigurationError:
                    raise ConfigurationError(WRONG_KEY) from None
            if not headers:
                continue
            if seal:
                values = {k: v if is_sealed(v) else box.seal(v) for k, v in headers.items()}
            else:
                values = box.open_values(headers)
            bind.execute(
                sa.update(subscriptions).where(subscriptions.c.id == row_id).values(headers=values)
            )
        if len(rows) < BATCH:
            return
        after = rows[-1][0]


def upgrade() -> None:
    _rewrite(seal=True)


def downgrade() -> None:
    _rewrite(seal=False)
