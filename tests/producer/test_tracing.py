"""The SDK and trace context: a caller's `traceparent` is carried by the events it publishes
(refused when it is not W3C), a producer with tracing makes each publish a span, and
without either the messages carry nothing new."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from common.errors import TopologyError
from common.settings import Settings
from common.tracing import configure, parse
from common.transport import MemoryTransport, topology
from producer import InvalidEvent, Producer
from tests.queues import events_waiting

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SETTINGS = Settings(broker_url="memory://")


@pytest.fixture
def transport() -> MemoryTransport:
    memory = MemoryTransport()
    memory.declare(topology.build(SETTINGS.retry_delays_s))
    return memory


def test_a_callers_context_rides_on_every_event_it_publishes(transport: MemoryTransport) -> None:
    producer = Producer(SETTINGS, transport=transport)
    producer.publish("order.created", {}, tenant="ten_a", traceparent=PARENT, tracestate="v=1")
    producer.publish_batch(
        [{"type": "order.paid", "tenant": "ten_a"}, {"type": "order.sent", "tenant": "ten_a"}],
        traceparent=PARENT,
    )
    asyncio.run(
        producer.publish_batch_async([{"type": "order.x", "tenant": "ten_a"}], traceparent=PARENT)
    )
    producer.publish("order.untraced", {}, tenant="ten_a")

    headers = {event.type: message.headers for message, event in events_waiting(transport)}
    assert headers["order.created"] == {"traceparent": PARENT, "tracestate": "v=1"}
    assert headers["order.paid"] == headers["order.sent"] == {"traceparent": PARENT}
    assert headers["order.x"] == {"traceparent": PARENT}
    assert headers["order.untraced"] == {}


def test_a_traceparent_that_is_not_w3c_is_refused_in_words(transport: MemoryTransport) -> None:
    producer = Producer(SETTINGS, transport=transport)
    with pytest.raises(InvalidEvent, match="traceparent must be W3C"):
        producer.publish("order.created", {}, tenant="ten_a", traceparent="0-1-2-3")
    assert events_waiting(transport) == []


def test_with_tracing_each_publish_is_a_span_the_events_carry(transport: MemoryTransport) -> None:
    exported = InMemorySpanExporter()
    tracing = configure("shop", processor=SimpleSpanProcessor(exported))
    producer = Producer(SETTINGS, transport=transport, tracing=tracing)

    producer.publish_batch([{"type": "a.b", "tenant": "t"}, {"type": "a.c", "tenant": "t"}])
    producer.publish("a.d", {}, tenant="t", traceparent=PARENT)

    first, second = exported.get_finished_spans()
    assert (first.name, first.kind, first.parent) == ("hookline.publish", SpanKind.PRODUCER, None)
    assert dict(first.attributes or {}) == {"hookline.events": 2}
    assert second.parent is not None and second.parent.span_id == int(PARENT[36:52], 16)
    carried = [parse(message.headers["traceparent"]) for message, _ in events_waiting(transport)]
    assert [int(c.span_id, 16) for c in carried if c] == [
        first.context.span_id,
        first.context.span_id,
        second.context.span_id,
    ]


def test_a_publish_inside_the_callers_own_span_is_its_child(transport: MemoryTransport) -> None:
    # An application that traces with OpenTelemetry: its current span is the parent.
    exported = InMemorySpanExporter()
    tracing = configure("shop", processor=SimpleSpanProcessor(exported))
    producer = Producer(SETTINGS, transport=transport, tracing=tracing)
    app = TracerProvider()
    app.add_span_processor(SimpleSpanProcessor(exported))

    with app.get_tracer("shop").start_as_current_span("checkout") as checkout:
        producer.publish("order.created", {}, tenant="t")

    (publish,) = [span for span in exported.get_finished_spans() if span.name != "checkout"]
    assert publish.parent is not None
    assert publish.parent.span_id == checkout.get_span_context().span_id
    assert publish.context.trace_id == checkout.get_span_context().trace_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left active


def test_a_failed_publish_ends_its_span_as_an_error() -> None:
    exported = InMemorySpanExporter()
    tracing = configure("shop", processor=SimpleSpanProcessor(exported))
    # The strict in-memory broker refuses a publish to an exchange nobody declared.
    producer = Producer(SETTINGS, transport=MemoryTransport(), tracing=tracing)
    producer.declare_topology = lambda: None  # type: ignore[method-assign]

    with pytest.raises(TopologyError):
        producer.publish("a.b", {}, tenant="t")

    (span,) = exported.get_finished_spans()
    assert dict(span.attributes or {})["error.type"] == "TopologyError"
    assert span.status.status_code == StatusCode.ERROR
