"""`database_url` on PostgreSQL for the tests that need its strictness (NUL in text, dates
out of range): import it into a test module to override the package's SQLite one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

__all__ = ["database_url"]


@pytest.fixture
def database_url(migrated_postgres: str) -> Iterator[str]:
    """The session's migrated PostgreSQL database, emptied after the test."""
    from common.db.models import Base
    from common.db.session import make_engine

    yield migrated_postgres
    engine = make_engine(migrated_postgres)
    with engine.begin() as connection:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()
