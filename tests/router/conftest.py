"""The router's tests share: an in-memory broker with the topology declared, a router
running on a thread, and helpers to publish events and take the delivery messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.errors import ConnectionLostError
from common.metrics import Metrics
from common.service import run_until_stopped
from common.settings import Settings
from common.transport import MemoryTransport, Message, Outgoing
from common.transport import topology as tp
from common.wire import Event, encode
from router import Router
from tests import builders
from tests.queues import DELIVERY_QUEUES

SCHEDULE = "1s,2s"


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    transport = MemoryTransport()
    transport.declare(tp.build(Settings(retry_schedule=SCHEDULE).retry_delays_s))
    yield transport
    transport.close()


@pytest.fixture
def running_router(sessions: sessionmaker[Session], transport: MemoryTransport) -> Iterator[Router]:
    settings = Settings(retry_schedule=SCHEDULE, subscription_refresh_s=0.1)
    router = Router(settings, transport, sessions, Metrics())
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    yield router
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), "router did not stop"


def publish(transport: MemoryTransport, event: Event) -> None:
    transport.publish([Outgoing(tp.EVENTS, event.type, encode(event), {}, event.id)])


class BrokenPublish(MemoryTransport):
    """The in-memory broker, whose next `failures` publishes of deliveries raise `error`."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.failures = 0
        self._error = error or ConnectionLostError("broker connection lost")

    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        if self.failures and any(m.exchange == tp.DELIVERIES for m in messages):
            self.failures -= 1
            raise self._error
        super().publish(messages, timeout_s=timeout_s)


def subscribed_tenant(sessions: sessionmaker[Session]) -> str:
    """A new tenant with one subscription (to all its events); its id."""
    with sessions.begin() as session:
        tenant = builders.tenant(session)
        builders.subscription(session, tenant.id, "http://127.0.0.1:1/a")
        return tenant.id


def wait_for(condition: Callable[[], bool], timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def drain(
    transport: MemoryTransport, queue: str, count: int, timeout_s: float = 10
) -> list[Message]:
    """Take `count` messages from `queue` (acked), failing if they do not all come; for
    `tp.DELIVERIES`, from every delivery queue (shards, overflow, unsharded)."""
    queues = DELIVERY_QUEUES if queue == tp.DELIVERIES else (queue,)
    consumer = transport.consume_many(queues, prefetch=1000)
    got = []
    deadline = time.monotonic() + timeout_s
    for message in consumer:
        if message is not None:
            got.append(message)
            consumer.ack(message)
        if len(got) >= count or time.monotonic() > deadline:
            break
    consumer.close()
    assert len(got) == count, f"expected {count} messages on {queue}, got {len(got)}"
    return got


def route_one(router: Router, transport: MemoryTransport, sent: Event) -> Message:
    """Run `router` on a thread until `sent`'s one delivery message is out, and a little
    longer (a copy that should not come would come then); that message."""
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        publish(transport, sent)
        (message,) = drain(transport, tp.DELIVERIES, 1)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(10)
    return message


@contextmanager
def routing(
    sessions: sessionmaker[Session], transport: MemoryTransport, settings: Settings | None = None
) -> Iterator[tuple[str, Callable[[], float]]]:
    """A router running on its own thread (reconnecting as `hookline router` does) for a
    tenant with one subscription; yields the tenant and a reading of events routed."""
    tenant_id = subscribed_tenant(sessions)
    metrics = Metrics()
    router = Router(settings or Settings(retry_schedule=SCHEDULE), transport, sessions, metrics)
    stop = threading.Event()
    thread = threading.Thread(target=run_until_stopped, args=(router.run, stop), daemon=True)
    thread.start()

    def routed() -> float:
        return metrics.registry.get_sample_value("hookline_events_routed_total") or 0.0

    try:
        yield tenant_id, routed
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "router did not stop"
