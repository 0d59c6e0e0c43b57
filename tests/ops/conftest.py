"""An API app for the operations routes, on the parametrised database and the memory broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from common.settings import Settings
from common.transport import MemoryTransport, topology
from hookline.api import create_app
from tests.api.support import ADMIN_TOKEN, Api, TestClient


@pytest.fixture
def ops_api(database_url: str) -> Iterator[Api]:
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
