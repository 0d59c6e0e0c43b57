"""Run the Alembic migrations that ship inside the package (`hookline migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from common.db.session import normalize_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str, secret_key: str | None = None) -> Config:
    config = Config()
    # Data migrations that seal values (0008) take the key from here, else the environment.
    config.attributes["secret_key"] = secret_key
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's config is a ConfigParser: a literal % in a URL must be doubled.
    config.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head", *, secret_key: str | None = None) -> None:
    command.upgrade(alembic_config(database_url, secret_key), revision)


def downgrade(database_url: str, revision: str, *, secret_key: str | None = None) -> None:
    command.downgrade(alembic_config(database_url, secret_key), revision)
