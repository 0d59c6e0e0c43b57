"""Fixtures of the security tests.

The broker-down tests use the API tests' app factory (a migrated SQLite copy, TestClient):
`database_url`, `make_api`, `migrated_template`. The credentials-and-secrets tests run on
SQLite and PostgreSQL alike: `db_url` (a migrated, empty database of either kind),
`db_sessions` and `make_db_api`/`api` (an app on it and the memory broker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.db.session import make_engine, make_sessionmaker
from tests.api.conftest import database_url, make_api, migrated_template
from tests.api.support import Api, build_api
from tests.services import migrated_database

__all__ = ["database_url", "make_api", "migrated_template"]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The root conftest's `database_url` (which this directory's shadows)."""
    yield from migrated_database(request, tmp_path)


@pytest.fixture
def db_sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def make_db_api(db_url: str) -> Iterator[Callable[..., Api]]:
    """`make_db_api(**settings)`: an app on `db_url`; closed after the test."""
    made: list[Api] = []

    def create(**overrides: Any) -> Api:
        api = build_api(db_url, **overrides)
        made.append(api)
        return api

    yield create
    for api in made:
        api.close()


@pytest.fixture
def api(make_db_api: Callable[..., Api]) -> Api:
    return make_db_api()
