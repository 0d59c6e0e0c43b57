"""Spans that sampling leaves out: with a parent-based sampler a child of an unsampled
parent is made without the SDK (it only carries the context on, in its parent's trace), and
with any other sampler the SDK decides as it would."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.tracing import Tracing, configure, parse
from common.wire import DeliveryMessage, Event

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED = parse(f"00-{TRACE_ID}-00f067aa0ba902b7-00", "vendor=1")
SAMPLED = parse(f"00-{TRACE_ID}-00f067aa0ba902b7-01")
EVENT = Event(tenant="ten_a", type="order.created")
DELIVERY = DeliveryMessage(delivery_id="dlv_1", event_id=EVENT.id, tenant="ten_a",
                           subscription_id="sub_1", attempt=1, event=EVENT)  # fmt: skip


def _tracing(
    monkeypatch: pytest.MonkeyPatch, sampler: str, ratio: str = ""
) -> tuple[Tracing, InMemorySpanExporter]:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)
    exported = InMemorySpanExporter()
    tracing = configure("dispatcher", processor=SimpleSpanProcessor(exported))
    assert tracing is not None
    return tracing, exported


def test_a_child_of_an_unsampled_parent_carries_the_trace_on_and_records_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracing, exported = _tracing(monkeypatch, "parentbased_traceidratio", "1.0")
    attempt = tracing.attempt(UNSAMPLED, DELIVERY)
    settle = tracing.settle(attempt, DELIVERY, batch=1, start_ns=1)
    attempt.set({"hookline.outcome": "success"})
    attempt.fail("503")
    for span in (attempt, settle):
        span.end()
        assert not span.sampled
        assert span.context.trace_id == TRACE_ID and not span.context.sampled
        assert span.context.tracestate == "vendor=1"
    assert UNSAMPLED is not None
    assert len({UNSAMPLED.span_id, attempt.context.span_id, settle.context.span_id}) == 3
    assert exported.get_finished_spans() == ()


def test_a_child_of_a_sampled_parent_is_recorded_with_its_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracing, exported = _tracing(monkeypatch, "parentbased_traceidratio", "0")
    attempt = tracing.attempt(SAMPLED, DELIVERY)
    settle = tracing.settle(attempt, DELIVERY, batch=1, start_ns=1)
    settle.end()
    attempt.end()
    finished_settle, finished_attempt = exported.get_finished_spans()
    assert finished_attempt.parent is not None
    assert finished_attempt.parent.span_id == int("00f067aa0ba902b7", 16)
    assert finished_settle.parent is not None
    assert finished_settle.parent.span_id == finished_attempt.context.span_id
    assert attempt.context.sampled


def test_a_sampler_that_is_not_parent_based_decides_for_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracing, exported = _tracing(monkeypatch, "always_on")
    attempt = tracing.attempt(UNSAMPLED, DELIVERY)
    attempt.end()
    (finished,) = exported.get_finished_spans()
    assert finished.context.trace_id == int(TRACE_ID, 16) and attempt.sampled
