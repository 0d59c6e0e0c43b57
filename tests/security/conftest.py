"""An API app on the migrated test database (SQLite and PostgreSQL) and the memory broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from common.settings import Settings
from common.transport import MemoryTransport, topology
from hookline.api import create_app
from tests.api.support import ADMIN_TOKEN, Api, TestClient


@pytest.fixture
def make_api(database_url: str) -> Iterator[Callable[..., Api]]:
    """`make_api(**settings)`: an app on `database_url`; closed after the test."""
    made: list[Api] = []

    def create(**overrides: Any) -> Api:
        values: dict[str, Any] = {
            "database_url": database_url,
            "broker_url": "memory://",
            "admin_token": ADMIN_TOKEN,
            "allow_private_targets": True,
            "retry_schedule": "1s,2s",
        }
        values.update(overrides)
        settings = Settings(**values)
        engine = make_engine(database_url)
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
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
