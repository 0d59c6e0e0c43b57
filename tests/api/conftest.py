"""An API app on a migrated SQLite file and the in-memory broker, driven by TestClient."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.db.migrate import upgrade
from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from common.settings import Settings
from common.ssrf import Resolver, system_resolver
from common.transport import MemoryTransport, Transport, topology
from hookline.api.app import create_app
from tests.api.support import ADMIN_TOKEN, Api, TestClient


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy (migrating costs ~1 s a test)."""
    path = tmp_path_factory.mktemp("template") / "hookline.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(migrated_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "hookline.db"
    shutil.copyfile(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def make_api(database_url: str) -> Iterator[Callable[..., Api]]:
    """`make_api(transport=..., sessionmaker=..., **settings)`: an app; closed after the test."""
    made: list[Api] = []

    def create(
        *,
        transport: Transport | None = None,
        sessionmaker: sessionmaker[Session] | None = None,
        raise_server_exceptions: bool = True,
        client_address: tuple[str, int] = ("testclient", 50000),
        declare: bool = True,
        resolver: Resolver = system_resolver,
        **overrides: Any,
    ) -> Api:
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
        transport = transport or MemoryTransport()
        if declare:
            # Declared up front, so a test can look into queues before anything is published.
            transport.declare(topology.build(settings.retry_delays_s))
        metrics = Metrics()
        # The test looks at the database through its own sessions, even when the app is
        # handed a broken sessionmaker.
        sessions = make_sessionmaker(engine)
        app = create_app(
            settings,
            transport=transport,
            sessionmaker=sessionmaker or sessions,
            metrics=metrics,
            resolver=resolver,
        )
        client = TestClient(
            app, raise_server_exceptions=raise_server_exceptions, client=client_address
        )
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


@pytest.fixture
def ops_api(sqlite_url: str) -> Iterator[Api]:
    """An app for the operations routes (`test_operations.py`), on a migrated SQLite file and
    the memory broker. The routes' queries are the dispatcher packages', which
    `tests/dispatcher/deadletters` and `tests/dispatcher/replay` run on PostgreSQL too; the
    routes themselves run once."""
    database_url = sqlite_url
    upgrade(database_url)
    settings = Settings(
        database_url=database_url,
        broker_url="memory://",
        admin_token=ADMIN_TOKEN,
        allow_private_targets=True,
        retry_schedule="1s,2s",
    )
    engine = make_engine(database_url)
    transport = MemoryTransport()
    transport.declare(topology.build(settings.retry_delays_s))
    metrics = Metrics()
    sessions = make_sessionmaker(engine)
    app = create_app(settings, transport=transport, sessionmaker=sessions, metrics=metrics)
    client = TestClient(app, client=("testclient", 50000))
    yield Api(client, app, settings, transport, sessions, metrics, engine)
    for thread in getattr(app.state, "replay_threads", {}).values():
        thread.join(10)
    client.close()
    transport.close()
    engine.dispose()
