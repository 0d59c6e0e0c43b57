"""Fixtures of the security tests.

The broker-down tests use the API tests' app factory (a migrated SQLite copy, TestClient):
`database_url`, `make_api`, `migrated_template`. The credentials-and-secrets tests run on
SQLite and PostgreSQL alike: `db_url` (a migrated, empty database of either kind),
`db_sessions` and `make_db_api`/`api` (an app on it and the memory broker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from common.db import migrate
from common.db.models import Base
from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from common.settings import Settings
from common.transport import MemoryTransport, topology
from hookline.api.app import create_app
from tests.api.conftest import database_url, make_api, migrated_template
from tests.api.support import ADMIN_TOKEN, Api, TestClient

__all__ = ["database_url", "make_api", "migrated_template"]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database: SQLite in tmp_path, or the session's PostgreSQL emptied
    afterwards (the root conftest's `database_url`, which this directory's shadows)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/hookline.db"
        migrate.upgrade(url)
        yield url
        return
    url = request.getfixturevalue("migrated_postgres")
    yield url
    engine = make_engine(url)
    with engine.begin() as connection:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


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
        values: dict[str, Any] = {
            "database_url": db_url,
            "broker_url": "memory://",
            "admin_token": ADMIN_TOKEN,
            "allow_private_targets": True,
            "retry_schedule": "1s,2s",
        }
        values.update(overrides)
        settings = Settings(**values)
        engine = make_engine(db_url)
        transport = MemoryTransport()
        transport.declare(topology.build(settings.retry_delays_s))
        sessions = make_sessionmaker(engine)
        metrics = Metrics()
        app = create_app(settings, transport=transport, sessionmaker=sessions, metrics=metrics)
        client = TestClient(app, client=("testclient", 50000))
        api = Api(client, app, settings, transport, sessions, metrics, engine)
        made.append(api)
        return api

    yield create
    for api in made:
        api.client.close()
        api.transport.close()
        api.engine.dispose()


@pytest.fixture
def api(make_db_api: Callable[..., Api]) -> Api:
    return make_db_api()
