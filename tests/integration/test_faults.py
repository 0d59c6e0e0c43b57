"""The router and dispatcher survive their dependencies: real RabbitMQ and PostgreSQL behind
fault proxies, the two services as separate `hookline` processes, a real receiver.

Events are published with the producer SDK straight to the broker (not through a proxy), and
every published id goes into a ledger; the faults hit only the services' own connections.
Once the system is quiet, every event was received with a valid signature or is a dead row
with an attempt, nothing is left unfinished, nothing unknown arrived, and both processes
reconnected by themselves and still exit 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from common import signing
from common.db import migrate
from common.db.models import Attempt, Delivery, EventRow
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import FINAL_STATUSES, DeliveryStatus
from common.secretbox import SecretBox
from common.settings import Settings
from common.transport import open_transport
from common.transport import topology as tp
from common.wire import webhook_id_for
from hookline.receiver import Received, Receiver, Reply
from producer import Producer
from tests import builders
from tests.faultproxy import FaultProxy
from tests.processes import Services
from tests.services import RABBITMQ_PORT, temporary_database, temporary_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

EVENTS = 1_000
BATCH = 25
PUBLISH_PAUSE_S = 0.03  # spreads the events over a few seconds, so faults land mid-flow
QUIET_TIMEOUT_S = 90.0
# Every REFUSED_EVERY-th event is always answered 500, so that some deliveries go through
# every retry and end dead (through the dead-letter drain) while the faults hit.
REFUSED_EVERY = 50
MAX_ATTEMPTS = 4  # HOOKLINE_RETRY_SCHEDULE=1s,1s,1s
SECRET_KEY = "bN7PSlmxNAWsUlXIEo2Pk5-XGJUIeLTiR2vkUMnxRT0"
PG_HOST_PORT = "127.0.0.1:5432"
# Broker connections that consume: the router's, the dispatcher's, its dead-letter drain's.
CONSUMERS = 3
HEARTBEAT_S = 2


@dataclass
class Rig:
    broker: FaultProxy
    database: FaultProxy
    broker_url: str  # the real broker, for the producer and for inspection
    database_url: str  # the real database, for inspection
    receiver: Receiver
    secret: str
    tenant: str
    services: Services
    ledger: dict[str, int] = field(default_factory=dict)  # event id -> sequence number

    def output(self) -> str:
        return self.services.logs_of_all()


def number(request: Received) -> int:
    return int(json.loads(request.body)["data"]["n"])


def refused(n: int) -> bool:
    return n % REFUSED_EVERY == 0


def answer(request: Received) -> Reply:
    return Reply(500) if refused(number(request)) else Reply(200)


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    # `heartbeat_s` (indirect parameter): short heartbeats notice a silent broker quickly.
    # Not by default: a thread that waits on a silent database then misses them too.
    options: dict[str, float] = getattr(request, "param", {})
    query = f"?heartbeat={options['heartbeat_s']:g}" if "heartbeat_s" in options else ""
    with (
        temporary_vhost() as broker_url,
        temporary_database() as database_url,
        FaultProxy("127.0.0.1", RABBITMQ_PORT) as broker,
        FaultProxy("127.0.0.1", 5432) as database,
        Receiver(respond=answer) as receiver,
    ):
        migrate.upgrade(database_url)
        engine = make_engine(database_url)
        try:
            with make_sessionmaker(engine)() as session, session.begin():
                tenant = builders.tenant(session, name="site-a")
                _, secret = builders.subscription(
                    session,
                    tenant.id,
                    f"{receiver.url}/hooks",
                    event_types=["content.*"],
                    box=SecretBox(SECRET_KEY),
                )
                tenant_id = tenant.id
        finally:
            engine.dispose()
        assert PG_HOST_PORT in database_url and f":{RABBITMQ_PORT}/" in broker_url
        env = {
            **os.environ,
            "HOOKLINE_BROKER_URL": broker_url.replace(f":{RABBITMQ_PORT}/", f":{broker.port}/")
            + query,
            "HOOKLINE_DATABASE_URL": database_url.replace(PG_HOST_PORT, database.address),
            "HOOKLINE_SECRET_KEY": SECRET_KEY,
            "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
            "HOOKLINE_ALLOW_HTTP": "true",
            "HOOKLINE_RETRY_SCHEDULE": "1s,1s,1s",
            # The refused events fail every time once the rest is delivered; an open circuit
            # would let one probe through per open period and stretch them past the timeout.
            "HOOKLINE_CIRCUIT_FAILURE_THRESHOLD": "1000",
            "HOOKLINE_SUBSCRIPTION_REFRESH_S": "0.5",
            "HOOKLINE_LOG_FORMAT": "json",
        }
        services = Services(env, tmp_path)
        rig = Rig(broker, database, broker_url, database_url, receiver, secret, tenant_id, services)
        services.start("router", "router")
        services.start("dispatcher", "dispatcher", "--concurrency", "16")
        try:
            yield rig
        finally:
            services.kill()


def publish_all(rig: Rig, done: threading.Event) -> threading.Thread:
    """Publish EVENTS events in small confirmed batches on a thread, into the ledger."""
    settings = Settings(broker_url=rig.broker_url, retry_schedule="1s,1s,1s")
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with Producer(settings) as producer:
                for start in range(0, EVENTS, BATCH):
                    numbers = range(start, min(start + BATCH, EVENTS))
                    events = [
                        {"tenant": rig.tenant, "type": "content.updated", "data": {"n": n}}
                        for n in numbers
                    ]
                    for event_id, n in zip(producer.publish_batch(events), numbers, strict=True):
                        rig.ledger[event_id] = n
                    time.sleep(PUBLISH_PAUSE_S)
        except BaseException as exc:
            failures.append(exc)
            raise
        finally:
            done.set()

    thread = threading.Thread(target=run, name="publisher", daemon=True)
    thread.start()
    return thread


def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def dead_rows(rig: Rig) -> tuple[int, int, dict[str, int]]:
    """(events stored, deliveries not final, dead event id -> attempts recorded)."""
    engine = make_engine(rig.database_url)
    try:
        with engine.connect() as db:
            events = db.scalar(select(func.count()).select_from(EventRow)) or 0
            unfinished = db.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status.not_in(FINAL_STATUSES))
            )
            attempts = (
                select(Attempt.delivery_id, func.count().label("n"))
                .group_by(Attempt.delivery_id)
                .subquery()
            )
            dead = db.execute(
                select(Delivery.event_id, func.coalesce(attempts.c.n, 0))
                .outerjoin(attempts, attempts.c.delivery_id == Delivery.id)
                .where(Delivery.status == DeliveryStatus.DEAD)
            )
            return events, unfinished or 0, {event_id: n for event_id, n in dead.tuples()}
    finally:
        engine.dispose()


def by_webhook_id(rig: Rig) -> dict[str, str]:
    """webhook-id -> event id, for every event in the ledger."""
    return {webhook_id_for(rig.tenant, event_id): event_id for event_id in list(rig.ledger)}


def settle_and_check(rig: Rig, started: dict[str, int]) -> dict[str, float]:
    """Wait for the system to go quiet, then check the ledger against what arrived."""
    started_at = time.monotonic()

    def quiet() -> bool:
        requests = rig.receiver.received
        events_of = by_webhook_id(rig)
        answered = [r for r in requests if not refused(number(r))]
        arrived = {events_of.get(r.headers.get("webhook-id", "")) for r in answered}
        events, unfinished, dead = dead_rows(rig)
        return (
            events == len(rig.ledger) and unfinished == 0 and set(rig.ledger) <= arrived | set(dead)
        )

    assert wait_until(quiet, QUIET_TIMEOUT_S, step_s=0.5), (
        f"not quiet after {QUIET_TIMEOUT_S}s: {rig.receiver.count} received, "
        f"{dead_rows(rig)[:2]} (events, unfinished)\n{rig.output()}"
    )
    quiet_after_s = time.monotonic() - started_at
    time.sleep(1.5)  # a late duplicate would arrive now
    received = rig.receiver.received
    _, unfinished, dead = dead_rows(rig)

    webhook = Webhook(rig.secret)
    events_of = by_webhook_id(rig)
    ids_by_number: dict[int, set[str]] = defaultdict(set)
    for request in received:
        payload = webhook.verify(request.body, request.headers)
        signing.verify(rig.secret, request.headers, request.body)  # raises when invalid
        webhook_id = request.headers["webhook-id"]
        event_id = events_of.get(webhook_id, "")
        assert event_id in rig.ledger, f"received an event that was never sent: {webhook_id}"
        assert payload["data"] == {"n": rig.ledger[event_id]}
        ids_by_number[json.loads(request.body)["data"]["n"]].add(webhook_id)
    assert all(len(ids) == 1 for ids in ids_by_number.values()), "a duplicate changed its id"

    accepted = [request for request in received if not refused(number(request))]
    arrived = {events_of.get(request.headers["webhook-id"]) for request in accepted}
    for event_id in set(rig.ledger) - arrived:
        assert dead.get(event_id, 0) >= 1, f"{event_id} neither arrived nor is dead with attempts"
    assert unfinished == 0
    expected_dead = {event_id for event_id, n in rig.ledger.items() if refused(n)}
    assert set(dead) == expected_dead, "only the refused events may end dead"

    transport = open_transport(rig.broker_url)
    try:
        poisoned = transport.queue_depth(tp.POISON)
    finally:
        transport.close()
    assert poisoned == 0, "healthy messages were pushed to the poison queue"

    assert rig.services.alive() == {"router": None, "dispatcher": None}, rig.output()
    reconnects = {
        "broker": rig.broker.accepted - started["broker"],
        "database": rig.database.accepted - started["database"],
    }
    codes = rig.services.stop()
    assert codes == {"router": 0, "dispatcher": 0}, (codes, rig.output())
    figures = {
        "events": len(rig.ledger),
        "requests": len(received),
        "delivered": len(arrived),
        "duplicates": len(accepted) - len(arrived),
        "dead": len(dead),
        "dead_with_all_attempts": sum(1 for n in dead.values() if n >= MAX_ATTEMPTS),
        "quiet_after_s": round(quiet_after_s, 1),
        **{f"new_{name}_connections": count for name, count in reconnects.items()},
    }
    print(f"\nfault figures: {figures}")
    return figures


def wait_started(rig: Rig) -> dict[str, int]:
    """Both services are up once each of their consumers holds a broker connection, and no
    new one came for a second: start-up's short-lived declare connections count as open
    too, so the count alone could be met before the last consumer connected (the
    dispatcher's, which opens a channel per delivery shard, takes a while on a busy box)."""
    assert wait_until(lambda: rig.broker.open_connections >= CONSUMERS, 60), rig.output()
    settled, deadline = rig.broker.accepted, time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if rig.broker.accepted == settled:
            break
        settled = rig.broker.accepted
    return {"broker": rig.broker.accepted, "database": rig.database.accepted}


def test_services_survive_broker_connection_resets(rig: Rig) -> None:
    started = wait_started(rig)
    done = threading.Event()
    publisher = publish_all(rig, done)
    recoveries_s = []
    for _ in range(3):
        wait_until(done.is_set, 1.5)
        assert rig.broker.reset_all() >= CONSUMERS
        reset_at = time.monotonic()
        # Reconnected by themselves: every consumer is back before the next reset.
        assert wait_until(lambda: rig.broker.open_connections >= CONSUMERS, 30), rig.output()
        recoveries_s.append(round(time.monotonic() - reset_at, 1))
    print(f"\nbroker reconnected after {recoveries_s} s")
    publisher.join(60)
    assert len(rig.ledger) == EVENTS
    figures = settle_and_check(rig, started)
    assert figures["new_broker_connections"] >= 3 * CONSUMERS


def test_services_survive_database_resets_and_a_blackhole(rig: Rig) -> None:
    started = wait_started(rig)
    done = threading.Event()
    publisher = publish_all(rig, done)
    wait_until(done.is_set, 1.5)
    assert rig.database.reset_all() > 0
    wait_until(done.is_set, 1.5)
    rig.database.blackhole()
    time.sleep(5.0)
    rig.database.heal()
    rig.database.reset_all()
    publisher.join(60)
    assert len(rig.ledger) == EVENTS
    figures = settle_and_check(rig, started)
    assert figures["new_database_connections"] >= 1
    # The outage was waited out in place: no consumer was reopened (which would have handed
    # its unacked messages back); the only new broker connections are the two publishers.
    assert figures["new_broker_connections"] <= 2, rig.output()


def test_services_survive_200ms_latency_on_both_dependencies(rig: Rig) -> None:
    started = wait_started(rig)
    done = threading.Event()
    publisher = publish_all(rig, done)
    wait_until(done.is_set, 1.0)
    rig.broker.latency(0.2)
    rig.database.latency(0.2)
    time.sleep(6.0)
    rig.broker.heal()
    rig.database.heal()
    publisher.join(60)
    assert len(rig.ledger) == EVENTS
    settle_and_check(rig, started)


@pytest.mark.parametrize("rig", [{"heartbeat_s": HEARTBEAT_S}], indirect=True)
def test_services_survive_a_broker_blackhole(rig: Rig) -> None:
    """A partition, not a reset: the broker falls silent; heartbeats tell both sides."""
    started = wait_started(rig)
    done = threading.Event()
    publisher = publish_all(rig, done)
    wait_until(done.is_set, 1.5)
    rig.broker.blackhole()
    time.sleep(4 * HEARTBEAT_S)
    rig.broker.heal()
    assert wait_until(lambda: rig.broker.open_connections >= CONSUMERS, 60), rig.output()
    publisher.join(60)
    assert len(rig.ledger) == EVENTS
    figures = settle_and_check(rig, started)
    assert figures["new_broker_connections"] >= CONSUMERS, "nobody noticed the silence"
