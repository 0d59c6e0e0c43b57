"""The router against the in-memory broker and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Delivery, EventRow
from common.db.statuses import DeliveryStatus
from common.metrics import Metrics
from common.settings import Settings
from common.tracing import configure
from common.transport import MemoryTransport, Message, Outgoing
from common.transport import topology as tp
from common.wire import DeliveryMessage, decode, encode
from router import Router
from tests import builders
from tests.queues import delivery_depth
from tests.router.conftest import (
    SCHEDULE,
    BrokenPublish,
    drain,
    publish,
    subscribed_tenant,
    wait_for,
)


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


def _route_counting_writes(
    sessions: sessionmaker[Session],
    transport: MemoryTransport,
    monkeypatch: pytest.MonkeyPatch,
    deliveries: int,
    poisons: int,
) -> tuple[list[Message], list[Message], list[str]]:
    """Run a router until `deliveries` delivery and `poisons` poison messages came out;
    also the id of each message every write was handed (a split writes some again)."""
    router = Router(Settings(retry_schedule=SCHEDULE), transport, sessions, Metrics())
    written: list[str] = []
    write = router.writer.write

    def counted(batch: Sequence[Message], *args: Any) -> Any:
        written.extend(str(m.message_id) for m in batch)
        return write(batch, *args)

    monkeypatch.setattr(router.writer, "write", counted)
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        return (
            drain(transport, tp.DELIVERIES, deliveries),
            drain(transport, tp.POISON, poisons),
            written,
        )
    finally:
        stop.set()
        thread.join(10)


# Events published straight to the exchange (no SDK, no API) with what their rows cannot
# hold: the body's timestamp and data, as JSON text.
UNSTORABLE = {
    "nul-in-a-string": ('"2026-12-07T10:00:00Z"', '{"note": "a\\u0000b"}'),
    "nul-in-a-key": ('"2026-12-07T10:00:00Z"', '{"a\\u0000": 1}'),
    "not-a-number": ('"2026-12-07T10:00:00Z"', '{"amount": NaN}'),
    "infinite": ('"2026-12-07T10:00:00Z"', '{"amount": 1e400}'),
    "no-zone": ('"2026-12-07T10:00:00"', "{}"),
    "before-year-1-in-utc": ('"0001-01-01T00:00:00+14:00"', "{}"),
}


def test_an_event_its_row_cannot_hold_is_poisoned_alone_and_its_batch_is_not_split(
    sessions: sessionmaker[Session], transport: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK and the API refuse such events; one published straight to the exchange
    reached the statement, which refused it (or the row could not be built), and its batch
    was split in halves down to it, every other tenant in the batch written again."""
    with sessions.begin() as session:
        sender, other = (builders.tenant(session).id for _ in range(2))
        builders.subscription(session, sender, "http://127.0.0.1:1/s")
        builders.subscription(session, other, "http://127.0.0.1:1/o")
    fine = [builders.event(other, data={"n": n}) for n in range(len(UNSTORABLE))]
    for (name, (stamp, data)), event in zip(UNSTORABLE.items(), fine, strict=True):
        body = f'{{"id": "{name}", "tenant": "{sender}", "type": "x", "timestamp": {stamp}, '
        transport.publish([Outgoing(tp.EVENTS, "x", f'{body}"data": {data}}}'.encode(), {},
                                    name)])  # fmt: skip
        publish(transport, event)
    delivered, poisoned, written = _route_counting_writes(
        sessions, transport, monkeypatch, len(fine), len(UNSTORABLE)
    )
    assert {decode(DeliveryMessage, m.body).event_id for m in delivered} == {e.id for e in fine}
    assert {m.message_id for m in poisoned} == set(UNSTORABLE)
    assert {m.headers[tp.H_REASON] for m in poisoned} == {"undecodable"}
    assert sorted(written) == sorted([*UNSTORABLE, *(e.id for e in fine)]), "a batch was split"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EventRow)) == len(fine)


def test_an_event_whose_matching_raises_is_poisoned_alone_and_its_batch_is_not_split(
    sessions: sessionmaker[Session], transport: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter this version cannot read (an operator a newer API wrote during a rolling
    upgrade) makes matching raise for the events it applies to: each such event goes to
    poison on its own, and the other tenant's events in the same batches are written
    once, not again in halves."""
    with sessions.begin() as session:
        newer, other = (builders.tenant(session).id for _ in range(2))
        builders.subscription(session, newer, "http://127.0.0.1:1/n",
                              payload_filter={"amount": {"within": [1, 5]}})  # fmt: skip
        builders.subscription(session, other, "http://127.0.0.1:1/o")
    unreadable = [builders.event(newer, data={"amount": n}) for n in range(10)]
    fine = [builders.event(other, data={"amount": n}) for n in range(10)]
    for pair in zip(unreadable, fine, strict=True):
        for event in pair:
            publish(transport, event)
    delivered, poisoned, written = _route_counting_writes(
        sessions, transport, monkeypatch, len(fine), len(unreadable)
    )
    assert {decode(DeliveryMessage, m.body).event_id for m in delivered} == {e.id for e in fine}
    assert {m.message_id for m in poisoned} == {e.id for e in unreadable}
    assert {m.headers[tp.H_REASON] for m in poisoned} == {"handler_error"}
    assert {m.headers[tp.H_ERROR] for m in poisoned} == {"KeyError"}
    assert sorted(written) == sorted(e.id for e in unreadable + fine), "a batch was split"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EventRow)) == len(fine)


def test_an_event_published_with_its_own_odd_delivery_count_is_routed(
    sessions: sessionmaker[Session], transport: MemoryTransport, running_router: Router
) -> None:
    """RabbitMQ passes a publisher's own `x-delivery-count` on to the first delivery (seen
    on 3.10): one that is not a count made the router's batch raise, and the event was
    split out of its batch and poisoned. It reads as a redelivery now, which is routed."""
    tenant_id = subscribed_tenant(sessions)
    time.sleep(0.3)
    for count in ("abc", "\u00b2", [1]):
        event = builders.event(tenant_id)
        headers = {"x-delivery-count": count}
        transport.publish([Outgoing(tp.EVENTS, event.type, encode(event), headers, event.id)])
        (message,) = drain(transport, tp.DELIVERIES, 1)
        assert decode(DeliveryMessage, message.body).event_id == event.id
    assert transport.queue_depth(tp.POISON) == 0


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
