"""Fixtures for the dispatcher: a migrated SQLite file, the in-memory broker, and a running
dispatcher on a thread that is stopped (and whose errors surface) at the end of the test."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from common.db import migrate
from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from common.settings import Settings
from common.transport import MemoryTransport, Outgoing
from common.transport import topology as tp
from common.wire import DeliveryMessage, encode
from dispatcher import Dispatcher
from tests.builders import DEV_BOX

WAIT_S = 15.0


def wait_until(predicate: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"condition not met within {timeout_s} s")


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "broker_url": "memory://",
        "retry_schedule": "100ms,100ms",
        "allow_private_targets": True,
        "connect_timeout_s": 2.0,
        "request_timeout_s": 2.0,
        "subscription_refresh_s": 0.1,
        "dispatcher_concurrency": 4,
        "publish_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@dataclass
class Harness:
    """A dispatcher over one in-memory broker and one database, run on demand."""

    settings: Settings
    transport: MemoryTransport
    db: sessionmaker[Session]
    metrics: Metrics = field(default_factory=lambda: Metrics(CollectorRegistry()))

    def __post_init__(self) -> None:
        self.transport.declare(tp.build(self.settings.retry_delays_s))

    def publish(self, message: DeliveryMessage, headers: dict[str, Any] | None = None) -> None:
        self.publish_raw(encode(message), headers)

    def publish_raw(self, body: bytes, headers: dict[str, Any] | None = None) -> None:
        outgoing = Outgoing(tp.DELIVERIES, tp.DELIVERY_ROUTING_KEY, body, headers or {})
        self.transport.publish([outgoing])

    def dispatcher(self, db: sessionmaker[Session] | None = None) -> Dispatcher:
        return Dispatcher(
            self.settings, self.transport, db or self.db, self.metrics, secret_box=DEV_BOX
        )

    @contextlib.contextmanager
    def running(
        self, dispatcher: Dispatcher | None = None, *, join_s: float = WAIT_S
    ) -> Iterator[threading.Event]:
        """Run one session of a dispatcher; on exit stop it and re-raise what it raised."""
        worker = dispatcher or self.dispatcher()
        stop = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                worker.run(stop)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name="test-dispatcher", daemon=True)
        thread.start()
        try:
            yield stop
        finally:
            stop.set()
            thread.join(join_s)
            worker.close()
        assert not thread.is_alive(), "dispatcher did not stop"
        if errors:
            raise errors[0]

    def depth(self, queue: str) -> int:
        return self.transport.queue_depth(queue)

    def take(self, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
        """Every message waiting in `queue`, removed from it."""
        broker = self.transport.broker
        with broker.cond:
            ready = broker.queues[queue].ready
            taken = [(envelope.body, dict(envelope.headers)) for envelope in ready]
            ready.clear()
        return taken


@pytest.fixture
def harness(db: sessionmaker[Session]) -> Harness:
    return Harness(make_settings(), MemoryTransport(), db)
