"""A row PostgreSQL would refuse is poison for its own message only (issue 14, point 7).

The router on real PostgreSQL and RabbitMQ (own vhost). Events with a NUL in their data
are published straight to the events exchange, past every ingest check, mixed into a
batch with other tenants' good events and then alone: each bad one lands in poison (the
router's own data check refuses it as undecodable; before it had one, the statement's
refusal split the batch down to it), the good ones are routed, the router's session never
ends (no reconnect, no redelivery), and no event data reaches the logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Delivery, EventRow
from common.metrics import Metrics
from common.settings import Settings
from common.transport import Outgoing, Transport, open_transport
from common.transport import topology as tp
from common.wire import Event, encode
from router import Router, batches
from tests import builders
from tests.security.postgres import database_url  # noqa: F401  (PostgreSQL, not SQLite)
from tests.services import temporary_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SCHEDULE = "1s,2s"
MARKER = "tenant-data-never-logged"  # in every event's data, good and bad


@pytest.fixture
def broker_url() -> Iterator[str]:
    with temporary_vhost() as url:
        yield url


@pytest.fixture
def transport(broker_url: str) -> Iterator[Transport]:
    transport = open_transport(broker_url)
    transport.declare(tp.build(Settings(retry_schedule=SCHEDULE).retry_delays_s))
    yield transport
    transport.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def publish_raw(transport: Transport, events: list[Event]) -> None:
    """Straight to the events exchange, as a producer that skips every check would."""
    transport.publish([Outgoing(tp.EVENTS, e.type, encode(e), {}, e.id) for e in events])


@pytest.mark.parametrize("checked", [True, False], ids=["data-check", "statement-refuses"])
def test_router_poisons_only_the_refused_event_and_keeps_its_session(
    sessions: sessionmaker[Session],
    transport: Transport,
    broker_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    checked: bool,
) -> None:
    """`statement-refuses`: without the router's data check, as for a value no check
    foresaw, PostgreSQL refuses the row and the batch is split down to it."""
    if not checked:
        monkeypatch.setattr(batches, "storable", lambda event: event)
    caplog.set_level(logging.INFO)
    with sessions.begin() as session:
        tenants = [builders.tenant(session, name=name).id for name in ("noisy", "quiet")]
        for tenant in tenants:
            builders.subscription(session, tenant, "http://127.0.0.1:1/h", event_types=["order.*"])
    noisy, quiet = tenants
    bad = [
        builders.event(noisy, id=f"evt_bad_{n}", data={"note": f"{MARKER} a\u0000b", "n": n})
        for n in range(10)
    ]
    good = [
        builders.event(quiet, id=f"evt_good_{n}", data={"note": MARKER, "n": n}) for n in range(10)
    ]
    # One batch of both tenants, interleaved, queued before the router starts.
    publish_raw(transport, [e for pair in zip(bad, good, strict=True) for e in pair])

    router_transport = open_transport(broker_url)
    settings = Settings(retry_schedule=SCHEDULE, subscription_refresh_s=0.1)
    router = Router(settings, router_transport, sessions, Metrics())
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            router.run(stop)
        except BaseException as exc:  # a session that ends: the service would reconnect
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def stored(prefix: str) -> int:
        with sessions() as session:
            return (
                session.scalar(
                    select(func.count()).select_from(EventRow).where(EventRow.id.like(f"{prefix}%"))
                )
                or 0
            )

    try:
        assert wait_for(lambda: stored("evt_good_") == 10 or bool(failure)), failure
        # Then a bad event alone (a batch of one), and a good one right after it.
        lone_bad = builders.event(noisy, id="evt_bad_lone", data={f"{MARKER}\u0000": 1})
        publish_raw(transport, [lone_bad])
        time.sleep(0.5)
        lone_good = builders.event(quiet, id="evt_good_after", data={"note": MARKER})
        started = time.monotonic()
        publish_raw(transport, [lone_good])
        assert wait_for(lambda: stored("evt_good_after") == 1 or bool(failure), 10), failure
        assert time.monotonic() - started < 2.0, "routing the next event was held up"
        assert not failure, f"the router's session ended: {failure[0]!r}"
        assert thread.is_alive()
        assert wait_for(lambda: transport.queue_depth(tp.POISON) == 11), transport.queue_depth(
            tp.POISON
        )
    finally:
        stop.set()
        thread.join(30)
        router_transport.close()

    assert not thread.is_alive(), "router did not stop"
    assert not failure, f"the router's session ended: {failure[0]!r}"
    assert stored("evt_bad_") == 0
    with sessions() as session:
        deliveries = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.tenant_id == quiet)
        )
    assert deliveries == 11
    poisoned = _poisoned(transport)
    assert sorted(poisoned) == sorted([e.id for e in bad] + [lone_bad.id])
    assert set(poisoned.values()) == {"undecodable" if checked else "handler_error"}
    assert MARKER not in caplog.text, "event data was logged"
    assert any("poison" in r.getMessage() for r in caplog.records)


def _poisoned(transport: Transport) -> dict[str, str]:
    """Each poisoned message's id, with its reason."""
    consumer = transport.consume(tp.POISON, prefetch=100)
    reasons: dict[str, str] = {}
    deadline = time.monotonic() + 10
    for message in consumer:
        if message is not None:
            reasons[str(message.message_id)] = str(message.headers[tp.H_REASON])
            consumer.ack(message)
        if len(reasons) >= 11 or time.monotonic() > deadline:
            break
    consumer.close()
    return reasons
