"""`/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from common.db.session import make_engine, make_sessionmaker
from common.errors import ConnectionLostError, TopologyError
from common.transport import MemoryTransport, topology
from hookline.api.readiness import ReadyProbe
from tests.api.support import assert_error


class UnreachableBroker(MemoryTransport):
    """A broker that stopped answering after the topology was declared."""

    def queue_depth(self, queue: str) -> int:
        raise ConnectionLostError("connection refused")


def missing_database(tmp_path: Path) -> tuple[Engine, sessionmaker[Session]]:
    # A file in a directory that does not exist cannot be opened: the database is down.
    engine = make_engine(f"sqlite:///{tmp_path}/absent/dir/hookline.db")
    return engine, make_sessionmaker(engine)


def test_healthz_says_the_process_is_alive(api):
    response = api.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_when_the_database_and_the_broker_answer(api):
    response = api.client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_readyz_is_not_ready_when_the_broker_is_unreachable(make_api):
    api = make_api(transport=UnreachableBroker())

    response = api.client.get("/readyz")

    message = assert_error(response, 503, "not_ready")
    assert "broker" in message
    assert "database" not in message


def test_readyz_is_not_ready_when_the_database_is_unreachable(make_api, tmp_path):
    engine, broken = missing_database(tmp_path)
    api = make_api(sessionmaker=broken)

    response = api.client.get("/readyz")

    message = assert_error(response, 503, "not_ready")
    assert "database" in message
    assert "broker" not in message
    assert str(tmp_path) not in response.text
    engine.dispose()


def test_readyz_declares_the_topology_on_a_fresh_broker(make_api):
    api = make_api(declare=False)
    with pytest.raises(TopologyError):
        api.transport.queue_depth(topology.EVENTS)

    response = api.client.get("/readyz")

    assert response.status_code == 200
    assert api.transport.queue_depth(topology.EVENTS) == 0
    assert api.transport.queue_depth(topology.DEAD) == 0


def test_metrics_serves_the_prometheus_text_of_the_registry(api):
    response = api.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'hookline_build_info{version="' in response.text
    assert 'hookline_events_ingested_total{result="accepted"} 0.0' in response.text


def test_a_check_that_fails_after_the_probe_answered_is_not_logged_as_an_error(caplog):
    """A check still running at the probe's timeout (a broker that never answers its
    handshake) fails later into the wrapper the probe awaited; asyncio logged that as an
    ERROR, "exception was never retrieved", on every probe while the broker hung."""

    def hangs_then_fails() -> None:
        time.sleep(0.2)
        raise ConnectionLostError("handshake timed out")

    async def probe_then_wait() -> list[str]:
        probe = ReadyProbe({"broker": hangs_then_fails}, timeout_s=0.05)
        problems = await probe.problems()
        await asyncio.sleep(0.5)  # the check fails meanwhile, on a live loop
        gc.collect()
        probe.close()
        return problems

    assert asyncio.run(probe_then_wait()) == ["broker unreachable (no answer within 0.05 s)"]
    gc.collect()
    assert "never retrieved" not in caplog.text
