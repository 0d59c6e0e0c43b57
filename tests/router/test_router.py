"""The router against the in-memory broker and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import event as sqla_event
from sqlalchemy import func, make_url, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from common.db import session as db_session
from common.db.models import Delivery, EventRow
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import DeliveryStatus
from common.errors import ConnectionLostError
from common.metrics import Metrics
from common.service import run_until_stopped
from common.settings import Settings
from common.tracing import configure
from common.transport import MemoryTransport, Message, Outgoing
from common.transport import topology as tp
from common.wire import DeliveryMessage, Event, decode, encode
from router import Router, Target
from router.persist import persist_batch
from tests import builders
from tests.faultproxy import FaultProxy
from tests.queues import DELIVERY_QUEUES, delivery_depth

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


def test_router_persists_event_and_one_delivery_per_matching_subscription(
    sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    with sessions.begin() as session:
        tenant = builders.tenant(session)
        wanted = [
            builders.subscription(
                session, tenant.id, "http://127.0.0.1:1/a", event_types=["order.created"]
            )[0].id,
            builders.subscription(
                session, tenant.id, "http://127.0.0.1:1/b", event_types=["order.*"]
            )[0].id,
        ]
        builders.subscription(session, tenant.id, "http://127.0.0.1:1/c", event_types=["invoice.*"])
        tenant_id = tenant.id
    settings = Settings(retry_schedule=SCHEDULE, subscription_refresh_s=0.1)
    router = Router(settings, transport, sessions, Metrics())
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        event = builders.event(tenant_id, type="order.created", data={"total": 12.5})
        publish(transport, event)
        messages = drain(transport, tp.DELIVERIES, 2)
    finally:
        stop.set()
        thread.join(10)
    decoded = [decode(DeliveryMessage, m.body) for m in messages]
    assert {d.subscription_id for d in decoded} == set(wanted)
    assert all(d.event == event and d.attempt == 1 and not d.replay for d in decoded)
    with sessions() as session:
        rows = session.scalars(select(Delivery)).all()
        assert {r.subscription_id for r in rows} == set(wanted)
        assert {r.id for r in rows} == {d.delivery_id for d in decoded}
        for row in rows:
            assert (row.status, row.attempts, row.replay_count) == (DeliveryStatus.PENDING, 0, 0)
            assert (row.tenant_id, row.event_id, row.event_type) == (
                tenant_id, event.id, "order.created"
            )  # fmt: skip
            assert row.created_at == row.updated_at and row.finished_at is None
        stored = session.get(EventRow, (tenant_id, event.id))
        assert stored is not None and stored.data == {"total": 12.5}
        assert (stored.type, stored.operation) == ("order.created", None)
        assert stored.timestamp == event.timestamp
        assert stored.received_at == rows[0].created_at
    assert transport.queue_depth(tp.EVENTS) == 0


def test_repeated_event_id_publishes_nothing_while_the_first_deliveries_are_still_queued(
    sessions: sessionmaker[Session], transport: MemoryTransport, running_router: Router
) -> None:
    with sessions.begin() as session:
        tenant = builders.tenant(session)
        for path in ("a", "b"):
            builders.subscription(session, tenant.id, f"http://127.0.0.1:1/{path}")
        tenant_id = tenant.id
    time.sleep(0.3)  # the index refreshes every 0.1 s
    event = builders.event(tenant_id)
    publish(transport, event)
    assert wait_for(lambda: delivery_depth(transport) == 2)
    publish(transport, event)  # a producer retry: same id, a fresh message
    publish(transport, builders.event(tenant_id))  # routed after it: the repeat is settled
    assert wait_for(lambda: delivery_depth(transport) == 4)
    time.sleep(0.3)
    messages = [decode(DeliveryMessage, m.body) for m in drain(transport, tp.DELIVERIES, 4)]
    assert sorted(m.event_id for m in messages).count(event.id) == 2
    assert len({m.delivery_id for m in messages}) == 4
    assert transport.queue_depth(tp.EVENTS) == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 4
        assert session.scalar(select(func.count()).select_from(EventRow)) == 2


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


def test_router_that_lost_the_broker_after_commit_republishes_unfinished_deliveries(
    sessions: sessionmaker[Session],
) -> None:
    """The crash window: rows committed, delivery messages never confirmed, event unacked."""
    transport = BrokenPublish()
    transport.declare(tp.build(Settings(retry_schedule=SCHEDULE).retry_delays_s))
    with sessions.begin() as session:
        tenant = builders.tenant(session)
        for path in ("a", "b"):
            builders.subscription(session, tenant.id, f"http://127.0.0.1:1/{path}")
        tenant_id = tenant.id
    event = builders.event(tenant_id)
    publish(transport, event)
    transport.failures = 1
    router = Router(Settings(retry_schedule=SCHEDULE), transport, sessions, Metrics())
    with pytest.raises(ConnectionLostError):
        router.run(threading.Event())
    assert delivery_depth(transport) == 0
    assert transport.queue_depth(tp.EVENTS) == 1  # back, marked redelivered
    with sessions.begin() as session:
        rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        assert [r.status for r in rows] == [DeliveryStatus.PENDING, DeliveryStatus.PENDING]
        done, unfinished = rows[0].id, rows[1].id
        session.execute(
            update(Delivery).where(Delivery.id == done).values(status=DeliveryStatus.SUCCEEDED)
        )
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        (again,) = drain(transport, tp.DELIVERIES, 1)
    finally:
        stop.set()
        thread.join(10)
    assert decode(DeliveryMessage, again.body).delivery_id == unfinished
    assert again.headers.get(tp.H_RECHECK) == 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 2
        assert session.scalar(select(func.count()).select_from(EventRow)) == 1


@pytest.mark.parametrize("lost_at", ["commit", "statement"])
def test_write_that_reports_a_lost_connection_after_it_went_through_still_publishes(
    sessions: sessionmaker[Session], transport: MemoryTransport, lost_at: str
) -> None:
    """The retry in place finds the event stored by its own first try and publishes it,
    whether the COMMIT or the batch's statement itself reported the loss after it had
    landed (SQLite, whose writes go through a session; PostgreSQL's are cut by the network
    in the test below)."""
    if sessions.kw["bind"].dialect.name == "postgresql":
        pytest.skip("PostgreSQL runs a new batch on the writer's own connection, no session")
    tenant_id = subscribed_tenant(sessions)
    failures = [1]

    def lose_connection_once(*_args: object) -> None:
        if failures and failures.pop():
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

    def after_insert(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "WITH")):
            lose_connection_once()

    if lost_at == "commit":
        sqla_event.listen(sessions, "after_commit", lose_connection_once)
    else:
        sqla_event.listen(sessions.kw["bind"], "after_cursor_execute", after_insert)
    router = Router(Settings(retry_schedule=SCHEDULE), transport, sessions, Metrics())
    sent = builders.event(tenant_id)
    message = route_one(router, transport, sent)
    assert not failures, "the commit never failed: nothing was tested"
    assert decode(DeliveryMessage, message.body).event == sent
    assert delivery_depth(transport) == 0
    assert transport.queue_depth(tp.EVENTS) == 0


def test_a_statement_whose_answer_the_network_lost_after_it_landed_is_published_once(
    database_url: str, sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    """On PostgreSQL: the batch's statement reaches the server and commits, then the
    connection drops before its answer comes back. The writer retries in place, finds its
    own rows and publishes their delivery once, marked for the dispatcher to re-check."""
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("the writer's own connection is PostgreSQL's")
    tenant_id = subscribed_tenant(sessions)
    url = make_url(database_url)
    with FaultProxy("127.0.0.1", url.port or 5432) as proxy:
        engine = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
        router = Router(Settings(retry_schedule=SCHEDULE), transport, make_sessionmaker(engine),
                        Metrics())  # fmt: skip
        sent = builders.event(tenant_id)
        proxy.cut_after(sent.id.encode())  # the id travels in the statement's rows
        try:
            message = route_one(router, transport, sent)
        finally:
            engine.dispose()
    assert proxy.cuts == 1, "no answer was lost: nothing was tested"
    assert decode(DeliveryMessage, message.body).event == sent
    assert message.headers.get(tp.H_RECHECK) == 1  # published by the retry's recovery
    assert delivery_depth(transport) == 0
    assert transport.queue_depth(tp.EVENTS) == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1


def test_a_new_batch_while_the_database_takes_no_connection_waits_and_poisons_nothing(
    database_url: str,
    sessions: sessionmaker[Session],
    transport: MemoryTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On PostgreSQL: a writer's connection is gone and the database refuses a new one
    when the next batch comes. That is the database away (wait in place), not a batch
    refused for what it holds: were it split, each of its events would be poisoned."""
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("the writer's own connection is PostgreSQL's")
    monkeypatch.setattr(db_session, "PING_IDLE_S", 0.0)  # each batch finds the lost one first
    url = make_url(database_url)
    with FaultProxy("127.0.0.1", url.port or 5432) as proxy:
        engine = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
        try:
            with routing(make_sessionmaker(engine), transport) as (tenant_id, routed):
                first = builders.event(tenant_id)
                publish(transport, first)
                drain(transport, tp.DELIVERIES, 1)  # the writer holds its connection now
                proxy.refuse()
                assert proxy.reset_all() > 0
                threading.Timer(1.5, proxy.heal).start()
                sent = builders.event(tenant_id)
                publish(transport, sent)
                (message,) = drain(transport, tp.DELIVERIES, 1)
                assert routed() == 2
        finally:
            engine.dispose()
    assert decode(DeliveryMessage, message.body).event == sent
    assert transport.queue_depth(tp.POISON) == 0
    assert transport.queue_depth(tp.EVENTS) == 0


def test_batch_whose_publish_failed_is_published_once_by_the_one_by_one_fallback(
    sessions: sessionmaker[Session],
) -> None:
    transport = BrokenPublish(error=RuntimeError("marshalling failed"))
    transport.declare(tp.build(Settings(retry_schedule=SCHEDULE).retry_delays_s))
    tenant_id = subscribed_tenant(sessions)
    events = [builders.event(tenant_id) for _ in range(5)]
    for sent in events:
        publish(transport, sent)
    transport.failures = 1
    router = Router(Settings(retry_schedule=SCHEDULE), transport, sessions, Metrics())
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        messages = drain(transport, tp.DELIVERIES, 5)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(10)
    assert transport.failures == 0, "the publish never failed: nothing was tested"
    assert sorted(decode(DeliveryMessage, m.body).event_id for m in messages) == sorted(
        e.id for e in events
    )
    assert delivery_depth(transport) == 0
    assert transport.queue_depth(tp.POISON) == 0


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


def test_lone_event_is_acked_once_confirmed_without_waiting_for_the_next_batch(
    sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    with routing(sessions, transport) as (tenant_id, routed):
        publish(transport, builders.event(tenant_id))
        drain(transport, tp.DELIVERIES, 1)
        assert wait_for(lambda: routed() == 1.0, 5), "the lone event was not settled"


class HeldConfirms(MemoryTransport):
    """The in-memory broker whose delivery publishes are queued at once but confirmed only
    when the test says so (or never: `lose` drops the confirm of the next batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Future[None]] = []
        self.lose = False

    def submit(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> Future[None]:
        if not any(m.exchange == tp.DELIVERIES for m in messages):
            return super().submit(messages, timeout_s=timeout_s)
        self.publish(messages, timeout_s=timeout_s)
        future: Future[None] = Future()
        if self.lose:
            self.lose = False  # the broker never answers for this batch
        else:
            self.held.append(future)
        return future

    def confirm_all(self) -> None:
        held, self.held = self.held, []
        for future in held:
            future.set_result(None)


def test_the_next_event_is_routed_while_the_last_batch_waits_for_its_confirm(
    sessions: sessionmaker[Session],
) -> None:
    transport = HeldConfirms()
    transport.declare(tp.build(Settings(retry_schedule=SCHEDULE).retry_delays_s))
    with routing(sessions, transport) as (tenant_id, routed):
        publish(transport, builders.event(tenant_id))
        assert wait_for(lambda: len(transport.held) == 1), "the first batch was not sent"
        publish(transport, builders.event(tenant_id))
        # Its confirm still out, the first batch holds back neither the second nor its ack.
        assert wait_for(lambda: len(transport.held) == 2), "routing waited for a confirm"
        assert routed() == 0.0, "acked before its confirm"
        assert transport.queue_depth(tp.EVENTS) == 0
        transport.confirm_all()
        assert wait_for(lambda: routed() == 2.0), "confirmed batches were not acked"
        assert delivery_depth(transport) == 2


def test_a_stop_while_a_batch_awaits_its_confirm_acks_it_once_confirmed_and_then_leaves(
    sessions: sessionmaker[Session],
) -> None:
    transport = HeldConfirms()
    transport.declare(tp.build(Settings(retry_schedule=SCHEDULE).retry_delays_s))
    tenant_id = subscribed_tenant(sessions)
    metrics = Metrics()
    router = Router(Settings(retry_schedule=SCHEDULE), transport, sessions, metrics)
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        publish(transport, builders.event(tenant_id))
        assert wait_for(lambda: len(transport.held) == 1), "the batch was not sent"
        stop.set()
        time.sleep(0.3)
        assert thread.is_alive(), "the router left with a batch awaiting its confirm"
        transport.confirm_all()
        thread.join(10)
        assert not thread.is_alive(), "the router did not leave once the confirm came"
    finally:
        stop.set()
        transport.confirm_all()
        thread.join(10)
    assert metrics.registry.get_sample_value("hookline_events_routed_total") == 1.0
    assert transport.queue_depth(tp.EVENTS) == 0  # acked, not handed back
    assert delivery_depth(transport) == 1


def test_a_batch_whose_confirm_never_comes_ends_the_session_and_is_routed_again(
    sessions: sessionmaker[Session],
) -> None:
    transport = HeldConfirms()
    transport.declare(tp.build(Settings(retry_schedule=SCHEDULE).retry_delays_s))
    settings = Settings(retry_schedule=SCHEDULE, publish_timeout_s=0.5)
    with routing(sessions, transport, settings) as (tenant_id, routed):
        transport.lose = True
        sent = builders.event(tenant_id)
        publish(transport, sent)
        # No confirm within publish_timeout_s: the session ends with the event unacked, and
        # the next one routes the redelivered event again: its committed deliveries are
        # published once more, and the event is acked once that copy is confirmed.
        assert wait_for(lambda: len(transport.held) == 1, 15), "the lost batch was not resent"
        transport.confirm_all()
        assert wait_for(lambda: routed() == 1.0)
        copies = drain(transport, tp.DELIVERIES, 2)  # the unconfirmed copy and its resend
        assert {decode(DeliveryMessage, m.body).event_id for m in copies} == {sent.id}
        assert transport.queue_depth(tp.EVENTS) == 0


def test_an_event_is_routed_while_another_batch_waits_on_the_database(
    sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("SQLite routes with one writer: a waiting write holds the next")
    with routing(sessions, transport) as (tenant_id, routed):
        target = Target(subscription_id="", tenant_id=tenant_id, event_types=("order.*",))
        blocked, free = builders.event(tenant_id), builders.event(tenant_id)
        # Another transaction holds `blocked`'s unique key: the router's write of it waits.
        with sessions() as holder, holder.begin():
            persist_batch(holder, [(blocked, [target])])
            publish(transport, blocked)
            time.sleep(0.3)  # its writer is waiting on the key now
            publish(transport, free)
            first = drain(transport, tp.DELIVERIES, 1)
            assert decode(DeliveryMessage, first[0].body).event_id == free.id
            assert routed() == 1.0
            holder.rollback()  # the key is free: the waiting write goes through
        second = drain(transport, tp.DELIVERIES, 1)
        assert decode(DeliveryMessage, second[0].body).event_id == blocked.id
        assert wait_for(lambda: routed() == 2.0)


def test_undecodable_event_goes_to_poison_with_raw_body_and_the_queue_keeps_flowing(
    sessions: sessionmaker[Session], transport: MemoryTransport, running_router: Router
) -> None:
    tenant_id = subscribed_tenant(sessions)
    time.sleep(0.3)
    transport.publish([Outgoing(tp.EVENTS, "order.created", b"{not json", {}, None)])
    publish(transport, builders.event(tenant_id))
    poisoned = drain(transport, tp.POISON, 1)
    assert poisoned[0].body == b"{not json"
    assert poisoned[0].headers[tp.H_REASON] == "undecodable"
    assert poisoned[0].headers[tp.H_SOURCE_QUEUE] == tp.EVENTS
    drain(transport, tp.DELIVERIES, 1)


def test_subscription_created_while_running_is_picked_up(
    sessions: sessionmaker[Session], transport: MemoryTransport, running_router: Router
) -> None:
    with sessions.begin() as session:
        tenant_id = builders.tenant(session).id
    publish(transport, builders.event(tenant_id))
    time.sleep(0.3)
    assert delivery_depth(transport) == 0
    with sessions.begin() as session:
        builders.subscription(session, tenant_id, "http://127.0.0.1:1/late")
    time.sleep(0.3)
    publish(transport, builders.event(tenant_id))
    drain(transport, tp.DELIVERIES, 1)


def test_event_for_a_subscription_of_another_operation_creates_no_delivery(
    sessions: sessionmaker[Session], transport: MemoryTransport, running_router: Router
) -> None:
    with sessions.begin() as session:
        tenant = builders.tenant(session)
        builders.subscription(
            session,
            tenant.id,
            "http://127.0.0.1:1/a",
            event_types=["content.*"],
            operations=["sync"],
        )
        tenant_id = tenant.id
    time.sleep(0.3)
    publish(transport, builders.event(tenant_id, type="content.updated", operation="delete"))
    publish(transport, builders.event(tenant_id, type="content.updated", operation="sync"))
    (message,) = drain(transport, tp.DELIVERIES, 1)
    assert decode(DeliveryMessage, message.body).event.operation == "sync"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EventRow)) == 2


def test_traced_routing_gives_each_event_a_span_its_deliveries_carry_until_confirmed(
    sessions: sessionmaker[Session],
) -> None:
    exported = InMemorySpanExporter()
    tracing = configure("router", processor=SimpleSpanProcessor(exported))
    transport = BrokenPublish(error=RuntimeError("marshalling failed"))
    transport.declare(tp.build(Settings(retry_schedule=SCHEDULE).retry_delays_s))
    tenant_id = subscribed_tenant(sessions)
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced, untraced = builders.event(tenant_id), builders.event(tenant_id)
    transport.publish([
        Outgoing(tp.EVENTS, traced.type, encode(traced), {"traceparent": caller}, traced.id),
        Outgoing(tp.EVENTS, untraced.type, encode(untraced), {}, untraced.id),
    ])  # fmt: skip
    transport.failures = 1  # the first confirm fails: the batch is routed again in halves
    router = Router(Settings(retry_schedule=SCHEDULE), transport, sessions, Metrics(),
                    tracing=tracing)  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        messages = drain(transport, tp.DELIVERIES, 2)
        assert wait_for(lambda: len(exported.get_finished_spans()) == 4)
    finally:
        stop.set()
        thread.join(10)

    assert transport.failures == 0, "the publish never failed: nothing was tested"
    failed = [s for s in exported.get_finished_spans() if s.status.status_code == StatusCode.ERROR]
    kept = [s for s in exported.get_finished_spans() if s not in failed]
    # The try whose confirm failed ends its spans as errors; the spans of the try that went
    # out are the ones the delivery messages carry.
    assert {dict(s.attributes or {})["error.type"] for s in failed} == {"RuntimeError"}
    assert len(failed) == len(kept) == 2
    carried = {decode(DeliveryMessage, m.body).event_id: m.headers["traceparent"] for m in messages}
    by_event = {dict(s.attributes or {})["hookline.event.id"]: s for s in kept}
    for event_id, traceparent in carried.items():
        span = by_event[event_id].context
        assert traceparent == f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"
    parent = by_event[traced.id].parent
    assert parent is not None and parent.span_id == int(caller[36:52], 16)
    assert by_event[untraced.id].parent is None  # it came without a context: a new trace
    assert dict(by_event[traced.id].attributes or {})["hookline.deliveries"] == 1
    # The row was written by the first try (then kept): replays join the trace through it.
    with sessions() as session:
        stored = session.scalar(select(EventRow.traceparent).where(EventRow.id == traced.id))
    (first,) = [s for s in failed if dict(s.attributes or {})["hookline.event.id"] == traced.id]
    assert stored == f"00-{caller[3:35]}-{first.context.span_id:016x}-01"
    tracing.shutdown()  # type: ignore[union-attr]
