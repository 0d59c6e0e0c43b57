"""The producer SDK against the in-memory broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from common.errors import ConnectionLostError
from common.metrics import Metrics
from common.settings import Settings
from common.transport import MemoryTransport, Outgoing, topology
from common.transport.topology import Topology
from common.wire import Event, WireEvent, encode, encode_fields
from producer import InvalidEvent, Producer
from tests.queues import events_waiting


class RecordingTransport(MemoryTransport):
    """The in-memory transport, remembering each publish and declare call it served."""

    def __init__(self) -> None:
        super().__init__()
        self.publish_calls: list[int] = []
        self.submit_many_calls: list[int] = []
        self.declare_calls = 0

    def declare(self, topology: Topology) -> None:
        self.declare_calls += 1
        super().declare(topology)

    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        self.publish_calls.append(len(messages))
        super().publish(messages, timeout_s=timeout_s)

    def submit_many(
        self, batches: Sequence[Sequence[Outgoing]], *, timeout_s: float = 30.0
    ) -> list[Future[None]]:
        self.submit_many_calls.append(len(batches))
        return super().submit_many(batches, timeout_s=timeout_s)


class DisconnectedTransport(MemoryTransport):
    """A broker connection that drops whenever something is published."""

    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        raise ConnectionLostError("connection reset by peer")


def ingested(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("hookline_events_ingested_total", {"result": result})
    return value or 0.0


@pytest.fixture
def settings() -> Settings:
    return Settings(broker_url="memory://", retry_schedule="1s,2s")


@pytest.fixture
def transport(settings: Settings) -> RecordingTransport:
    transport = RecordingTransport()
    # Declared here too, so the queues can be inspected even when nothing was published.
    transport.declare(topology.build(settings.retry_delays_s))
    return transport


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def producer(settings: Settings, transport: RecordingTransport, metrics: Metrics) -> Producer:
    return Producer(settings, transport=transport, metrics=metrics)


def test_publish_puts_the_event_on_the_events_exchange_and_returns_its_id(producer, transport):
    event_id = producer.publish("order.created", {"order": 42}, tenant="ten_a")

    [(message, event)] = events_waiting(transport)
    assert event.id == event_id
    assert event.tenant == "ten_a"
    assert event.type == "order.created"
    assert event.data == {"order": 42}
    assert event.operation is None
    assert event.timestamp.tzinfo is not None
    assert message.routing_key == "order.created"
    assert message.message_id == event_id


def test_publish_keeps_the_given_id_and_operation_and_stores_the_timestamp_in_utc(
    producer, transport
):
    stamp = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    local = stamp.astimezone(timezone(timedelta(hours=2)))  # within a day of the clock

    event_id = producer.publish(
        "content.updated",
        {"page": "home"},
        tenant="ten_a",
        id="site-a:home:7",
        operation="sync",
        timestamp=local,
    )

    assert event_id == "site-a:home:7"
    [(_, event)] = events_waiting(transport)
    assert event.operation == "sync"
    assert event.timestamp == stamp
    assert event.timestamp.utcoffset() == timedelta(0)


def test_publish_generates_distinct_ids(producer):
    ids = {producer.publish("order.created", {}, tenant="ten_a") for _ in range(5)}

    assert len(ids) == 5
    assert all(event_id.startswith("evt_") for event_id in ids)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"type": "order created"}, "type"),
        ({"type": ""}, "type"),
        ({"id": "has spaces"}, "id"),
        ({"operation": "a b"}, "operation"),
        ({"tenant": ""}, "tenant"),
        # Not an id: the router's database would refuse the NUL (and split its batch).
        ({"tenant": "ten_a\x00"}, "tenant"),
        ({"tenant": "acme corp"}, "tenant"),
        ({"timestamp": datetime(2026, 5, 1, 12, 0)}, "timezone"),
        ({"data": {"when": object()}}, "JSON"),
    ],
)
def test_publish_refuses_an_invalid_event_and_publishes_nothing(
    producer, transport, metrics, kwargs, fragment
):
    arguments = {"type": "order.created", "data": {"order": 1}, "tenant": "ten_a", **kwargs}
    event_type = arguments.pop("type")
    data = arguments.pop("data")

    with pytest.raises(InvalidEvent, match=fragment) as caught:
        producer.publish(event_type, data, **arguments)

    assert isinstance(caught.value, ValueError)
    assert transport.publish_calls == []
    assert transport.queue_depth(topology.EVENTS) == 0
    assert ingested(metrics, "rejected") == 1
    assert ingested(metrics, "accepted") == 0


def test_publish_batch_sends_every_event_in_one_confirmed_publish(producer, transport, metrics):
    first = Event(tenant="ten_a", type="order.created", data={"n": 1})
    batch: list[Event | dict[str, Any]] = [
        first,
        {"tenant": "ten_a", "type": "order.paid", "data": {"n": 2}, "operation": "sync"},
        {"tenant": "ten_b", "type": "user.deleted", "id": "user-9-deleted"},
    ]

    ids = producer.publish_batch(batch)

    assert transport.publish_calls == [3]
    assert ids[0] == first.id
    assert ids[2] == "user-9-deleted"
    waiting = events_waiting(transport)
    assert [event.id for _, event in waiting] == ids
    assert [event.type for _, event in waiting] == ["order.created", "order.paid", "user.deleted"]
    assert [message.routing_key for message, _ in waiting] == [
        "order.created",
        "order.paid",
        "user.deleted",
    ]
    assert waiting[1][1].operation == "sync"
    assert waiting[2][1].tenant == "ten_b"
    assert ingested(metrics, "accepted") == 3


def test_publish_batch_with_one_invalid_event_names_it_and_publishes_none(producer, transport):
    batch = [
        {"tenant": "ten_a", "type": "order.created", "data": {}},
        {"tenant": "ten_a", "type": "not a type", "data": {}},
    ]

    with pytest.raises(InvalidEvent, match="#1"):
        producer.publish_batch(batch)

    assert transport.publish_calls == []
    assert transport.queue_depth(topology.EVENTS) == 0


def test_publish_batch_of_nothing_publishes_nothing(producer, transport):
    assert producer.publish_batch([]) == []
    assert transport.publish_calls == []


def test_a_broker_failure_propagates_and_is_counted(settings, metrics):
    transport = DisconnectedTransport()
    producer = Producer(settings, transport=transport, metrics=metrics)

    with pytest.raises(ConnectionLostError):
        producer.publish("order.created", {}, tenant="ten_a")

    assert ingested(metrics, "failed") == 1
    assert ingested(metrics, "accepted") == 0
    assert transport.queue_depth(topology.EVENTS) == 0


def test_the_topology_is_declared_once(settings):
    transport = RecordingTransport()
    producer = Producer(settings, transport=transport)

    producer.publish("order.created", {}, tenant="ten_a")
    producer.publish_batch([{"tenant": "ten_a", "type": "order.paid"}])
    producer.declare_topology()

    assert transport.declare_calls == 1
    assert transport.queue_depth(topology.EVENTS) == 2
    for delay_s in settings.retry_delays_s:
        assert transport.queue_depth(topology.retry_queue(delay_s)) == 0


def test_a_producer_closes_the_transport_it_opened(settings):
    with Producer(settings) as producer:
        producer.publish("order.created", {}, tenant="ten_a")
        consumer = producer.transport.consume(topology.EVENTS, prefetch=1)

    with pytest.raises(ConnectionLostError):
        next(iter(consumer))


def test_a_producer_leaves_a_given_transport_open(settings, transport):
    with Producer(settings, transport=transport) as producer:
        producer.publish("order.created", {}, tenant="ten_a")

    assert [event.type for _, event in events_waiting(transport)] == ["order.created"]


def test_concurrent_publishes_on_a_loop_are_handed_over_together(producer, transport, metrics):
    producer.declare_topology()  # else the first publishes wait for it on threads

    async def publish_all() -> list[str]:
        publishes = [
            producer.publish_async("order.created", {"n": n}, tenant="ten_a") for n in range(50)
        ]
        return list(await asyncio.gather(*publishes))

    ids = asyncio.run(publish_all())

    assert len(set(ids)) == 50
    assert transport.submit_many_calls == [50]  # one hand-over for the loop iteration
    assert transport.publish_calls == [1] * 50  # each request still its own batch
    assert sorted(e.id for _, e in events_waiting(transport)) == sorted(ids)
    assert ingested(metrics, "accepted") == 50


def test_a_batch_published_on_a_loop_is_one_confirmed_publish(producer, transport):
    events = [{"type": "order.created", "tenant": "ten_a", "data": {"n": n}} for n in range(3)]

    ids = asyncio.run(producer.publish_batch_async(events))

    assert transport.publish_calls == [3]
    assert [e.id for _, e in events_waiting(transport)] == ids


def test_a_broker_failure_on_a_loop_propagates_and_is_counted(settings, metrics):
    producer = Producer(settings, transport=DisconnectedTransport(), metrics=metrics)

    with pytest.raises(ConnectionLostError):
        asyncio.run(producer.publish_async("order.created", {}, tenant="ten_a"))

    assert ingested(metrics, "failed") == 1
    assert ingested(metrics, "accepted") == 0


@pytest.mark.parametrize(
    "data", [{}, {"order": 42, "total": 10.5}, {"x": [1, None, True, "é\n"], "y": {"z": 10**30}}]
)
@pytest.mark.parametrize("operation", [None, "sync"])
def test_fields_encode_to_the_bytes_of_the_event_model(data, operation):
    fields: WireEvent = {
        "id": "evt_1", "tenant": "ten_a", "type": "order.created", "operation": operation,
        "timestamp": datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=UTC), "data": data,
    }  # fmt: skip

    assert encode_fields(fields) == encode(Event(**fields))


def test_publish_fields_publishes_each_event_as_its_wire_bytes(producer, transport, metrics):
    fields: list[WireEvent] = [
        {"id": f"e{n}", "tenant": "ten_a", "type": "order.created", "operation": None,
         "timestamp": datetime(2026, 5, 1, tzinfo=UTC), "data": {"n": n}}
        for n in range(3)
    ]  # fmt: skip

    ids = asyncio.run(producer.publish_fields_async(fields))

    assert ids == ["e0", "e1", "e2"]
    waiting = events_waiting(transport)
    assert [message.routing_key for message, _ in waiting] == ["order.created"] * 3
    assert [event for _, event in waiting] == [Event(**f) for f in fields]
    assert ingested(metrics, "accepted") == 3
