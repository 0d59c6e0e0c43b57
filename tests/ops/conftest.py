"""An API app for the operations routes, on a migrated SQLite file and the memory broker.

The routes' queries are the service package's, which `test_replay_jobs.py` and
`test_poison_and_gc.py` run on PostgreSQL too; the routes themselves run once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.db import migrate
from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from common.settings import Settings
from common.transport import MemoryTransport, topology
from hookline.api import create_app
from tests.api.support import ADMIN_TOKEN, Api, TestClient


@pytest.fixture
def ops_api(sqlite_url: str) -> Iterator[Api]:
    database_url = sqlite_url
    migrate.upgrade(database_url)
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
