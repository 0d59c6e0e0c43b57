"""The router's confirm window: a batch is acked once its delivery messages are confirmed,
and the next batch does not wait for it (nor for the database of another)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.metrics import Metrics
from common.settings import Settings
from common.transport import MemoryTransport, Outgoing
from common.transport import topology as tp
from common.wire import DeliveryMessage, decode
from router import Router, Target
from router.persist import persist_batch
from tests import builders
from tests.queues import delivery_depth
from tests.router.conftest import (
    SCHEDULE,
    drain,
    publish,
    routing,
    subscribed_tenant,
    wait_for,
)


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
            # Counted when its confirm is acked, a moment after the message is out.
            assert wait_for(lambda: routed() == 1.0)
            holder.rollback()  # the key is free: the waiting write goes through
        second = drain(transport, tp.DELIVERIES, 1)
        assert decode(DeliveryMessage, second[0].body).event_id == blocked.id
        assert wait_for(lambda: routed() == 2.0)
