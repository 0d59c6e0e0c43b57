"""The router when the broker or the database fails around a batch: after the commit, with
the answer lost, with no connection to be had, with the publish refused. Nothing is lost
and nothing is poisoned."""

from __future__ import annotations

import threading
import time

import pytest
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
from common.settings import Settings
from common.transport import MemoryTransport
from common.transport import topology as tp
from common.wire import DeliveryMessage, decode
from router import Router
from tests import builders
from tests.faultproxy import FaultProxy
from tests.queues import delivery_depth
from tests.router.conftest import (
    SCHEDULE,
    BrokenPublish,
    drain,
    publish,
    route_one,
    routing,
    subscribed_tenant,
    wait_for,
)


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
                # Counted when its confirm is acked, a moment after the message is out.
                assert wait_for(lambda: routed() == 2)
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
