"""One trace from ingest to settle, in one process (tests/tracing/pipeline.py): the spans,
their parents and attributes, the context a retry keeps, and the `traceparent` only an
opted-in receiver gets; with tracing off, no context travels at all."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select
from standardwebhooks import Webhook

from common.db.models import EventRow
from common.db.session import make_engine
from common.tracing import parse
from hookline.receiver import Received, Reply
from tests.tracing.pipeline import Pipeline, pipeline

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


def _order(stack: Pipeline, headers: dict[str, str] | None = None) -> str:
    answer = requests.post(
        f"{stack.url}/v1/events",
        json={"type": "order.created", "data": {"order": 1}},
        headers={**stack.key, **(headers or {})},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    event_id: str = answer.json()["id"]
    return event_id


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _by_path(stack: Pipeline, path: str) -> list[Received]:
    return [request for request in stack.receiver.received if request.path == path]


def test_one_trace_runs_from_ingest_to_settle_and_only_the_opted_in_receiver_joins_it(
    tmp_path: Path,
) -> None:
    with pipeline(tmp_path, traced=True) as stack:
        traced_sub, traced_secret = stack.subscribe("/traced", propagate_trace=True)
        plain_sub, plain_secret = stack.subscribe("/plain", propagate_trace=False)
        time.sleep(0.5)  # the router's index refreshes every 0.1 s
        event_id = _order(stack, {"traceparent": CALLER, "tracestate": "vendor=7"})
        assert stack.receiver.wait_for(2, timeout_s=20)
        settles = stack.wait_for_spans("hookline.settle", 2)
        (ingest,) = stack.spans("hookline.ingest")
        (route,) = stack.spans("hookline.route")
        attempts = stack.spans("hookline.attempt")

    # One trace, the caller's, from the request to both settles.
    spans = [ingest, route, *attempts, *settles]
    assert {format(span.context.trace_id, "032x") for span in spans} == {TRACE_ID}
    assert _parent_id(ingest) == int(CALLER_SPAN, 16)
    assert ingest.kind == SpanKind.SERVER
    assert dict(ingest.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/v1/events",
        "hookline.tenant.id": stack.tenant_id,
        "hookline.events": 1,
        "http.response.status_code": 202,
    }
    assert _parent_id(route) == ingest.context.span_id
    assert route.attributes is not None
    assert route.attributes["hookline.event.id"] == event_id
    assert route.attributes["hookline.deliveries"] == 2
    assert len(attempts) == 2
    by_subscription = {span.attributes["hookline.subscription.id"]: span for span in attempts}  # type: ignore[index]
    assert set(by_subscription) == {traced_sub, plain_sub}
    for attempt in attempts:
        assert _parent_id(attempt) == route.context.span_id
        assert attempt.kind == SpanKind.CLIENT
        attributes = dict(attempt.attributes or {})
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["http.response.status_code"] == 200
        assert attributes["hookline.attempt"] == 1
        assert attributes["hookline.tenant.id"] == stack.tenant_id
        assert attributes["hookline.outcome"] == "success"
        assert str(attributes["hookline.delivery.id"]).startswith("dlv_")
        # The endpoint's host only: never its URL, its path or port.
        assert not any("/traced" in str(v) or "http" in str(v) for v in attributes.values())
    assert {_parent_id(settle) for settle in settles} == {a.context.span_id for a in attempts}
    assert all(dict(s.attributes or {})["hookline.outcome"] == "success" for s in settles)

    # The opted-in receiver got the attempt's own context; the other none at all.
    (traced,) = _by_path(stack, "/traced")
    (plain,) = _by_path(stack, "/plain")
    sent = parse(traced.headers["traceparent"], traced.headers.get("tracestate"))
    assert sent is not None
    assert sent.trace_id == TRACE_ID
    assert int(sent.span_id, 16) == by_subscription[traced_sub].context.span_id
    assert sent.tracestate == "vendor=7"
    assert "traceparent" not in plain.headers and "tracestate" not in plain.headers
    # The context is beside the signature, not in it: both still verify.
    Webhook(traced_secret).verify(traced.body, traced.headers)
    Webhook(plain_secret).verify(plain.body, plain.headers)

    # The event row keeps the route's context, for replays of its deliveries.
    engine = make_engine(f"sqlite:///{tmp_path}/hookline.db")
    with engine.connect() as db:
        stored = db.scalar(select(EventRow.traceparent).where(EventRow.id == event_id))
    engine.dispose()
    assert stored == f"00-{TRACE_ID}-{route.context.span_id:016x}-01"


def test_a_retry_keeps_the_trace_its_first_attempt_had(tmp_path: Path) -> None:
    answers = iter([503, 200])

    def respond(request: Received) -> Reply:
        return Reply(next(answers, 200))

    with pipeline(tmp_path, traced=True, respond=respond) as stack:
        stack.subscribe("/hooks", propagate_trace=True)
        time.sleep(0.5)
        _order(stack, {"traceparent": CALLER})
        assert stack.receiver.wait_for(2, timeout_s=20)
        stack.wait_for_spans("hookline.settle", 2)
        (route,) = stack.spans("hookline.route")
        attempts = sorted(
            stack.spans("hookline.attempt"),
            key=lambda span: (span.attributes or {})["hookline.attempt"],  # type: ignore[arg-type,return-value]
        )

    first, second = attempts
    # Siblings under the route that produced the delivery, not a chain of attempts.
    assert _parent_id(first) == _parent_id(second) == route.context.span_id
    assert first.context.trace_id == second.context.trace_id == int(TRACE_ID, 16)
    assert dict(first.attributes or {})["hookline.outcome"] == "retry"
    assert dict(first.attributes or {})["http.response.status_code"] == 503
    assert first.status.status_code == StatusCode.ERROR
    assert dict(first.attributes or {})["error.type"] == "503"
    assert dict(second.attributes or {})["hookline.outcome"] == "success"
    assert dict(second.attributes or {})["hookline.attempt"] == 2
    sent = [parse(r.headers["traceparent"]) for r in stack.receiver.received]
    assert [int(s.span_id, 16) for s in sent if s] == [
        first.context.span_id,
        second.context.span_id,
    ]


def test_a_batch_is_one_ingest_span_whose_events_are_routed_within_it(tmp_path: Path) -> None:
    with pipeline(tmp_path, traced=True) as stack:
        stack.subscribe("/hooks", propagate_trace=False)
        time.sleep(0.5)
        events = [{"type": "order.created", "data": {"n": n}} for n in range(3)]
        answer = requests.post(
            f"{stack.url}/v1/events/batch", json={"events": events}, headers=stack.key, timeout=10
        )
        assert answer.status_code == 202, answer.text
        assert stack.receiver.wait_for(3, timeout_s=20)
        routes = stack.wait_for_spans("hookline.route", 3)
        (ingest,) = stack.spans("hookline.ingest")

    assert ingest.parent is None  # no context came: the request started the trace
    assert dict(ingest.attributes or {})["hookline.events"] == 3
    assert dict(ingest.attributes or {})["http.route"] == "/v1/events/batch"
    assert {_parent_id(route) for route in routes} == {ingest.context.span_id}
    assert {route.context.trace_id for route in routes} == {ingest.context.trace_id}


def test_both_ingest_paths_take_the_callers_context_and_ignore_a_malformed_one(
    tmp_path: Path,
) -> None:
    with pipeline(tmp_path, traced=True) as stack:
        # Plain: answered by the fast path. With an Idempotency-Key: by the route.
        _order(stack, {"traceparent": CALLER})
        _order(stack, {"traceparent": CALLER, "Idempotency-Key": "order-2"})
        _order(stack, {"traceparent": "00-not-a-context", "tracestate": "a=1"})
        _order(stack, {"traceparent": "ff" + CALLER[2:], "Idempotency-Key": "order-4"})
        routes = stack.wait_for_spans("hookline.route", 4)
        ingests = stack.spans("hookline.ingest")

    callers = [span for span in ingests if span.context.trace_id == int(TRACE_ID, 16)]
    assert len(callers) == 2
    assert {_parent_id(span) for span in callers} == {int(CALLER_SPAN, 16)}
    fresh = [span for span in ingests if span not in callers]
    assert len(fresh) == 2 and all(span.parent is None for span in fresh)
    # Each request's event was routed in the request's own span, whichever path took it.
    assert sorted(_parent_id(route) or 0 for route in routes) == sorted(
        span.context.span_id for span in ingests
    )


def test_with_tracing_off_no_context_travels_and_nothing_is_recorded(tmp_path: Path) -> None:
    with pipeline(tmp_path, traced=False) as stack:
        stack.subscribe("/hooks", propagate_trace=True)
        time.sleep(0.5)
        event_id = _order(stack, {"traceparent": CALLER})
        assert stack.receiver.wait_for(1, timeout_s=20)
        (received,) = stack.receiver.received

    assert "traceparent" not in received.headers
    engine = make_engine(f"sqlite:///{tmp_path}/hookline.db")
    with engine.connect() as db:
        stored = db.scalar(select(EventRow.traceparent).where(EventRow.id == event_id))
    engine.dispose()
    assert stored is None
