"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.services import migrated_database, temporary_database


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated-from-empty PostgreSQL database for this test session."""
    with temporary_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path}/hookline.db"


@pytest.fixture(scope="session")
def migrated_postgres(postgres_url: str) -> str:
    from common.db import migrate

    migrate.upgrade(postgres_url)
    return postgres_url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite in tmp_path, or the session's PostgreSQL emptied."""
    yield from migrated_database(request, tmp_path)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on `database_url`: the migrated database, SQLite and PostgreSQL."""
    from common.db.session import make_engine, make_sessionmaker

    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()
