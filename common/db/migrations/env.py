"""Alembic environment: runs migrations on the URL that `common.db.migrate` configured."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from common.db.models import Base

config = context.config


def run() -> None:
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
