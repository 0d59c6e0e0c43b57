"""W3C trace context as Hookline reads it at every edge: a valid context is kept (and a
later version read as 00), anything else is dropped, never an error."""

from __future__ import annotations

import pytest

from common.tracing import TraceContext, from_headers, parse

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_a_w3c_traceparent_is_kept_with_its_ids_and_sampled_flag() -> None:
    context = parse(PARENT)
    assert context == TraceContext(PARENT)
    assert (context.trace_id, context.span_id, context.sampled) == (
        TRACE_ID,
        "00f067aa0ba902b7",
        True,
    )
    assert parse(PARENT[:-2] + "00").sampled is False  # type: ignore[union-attr]
    assert context.headers() == {"traceparent": PARENT}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        PARENT.upper(),  # W3C ids are lowercase hex
        PARENT.replace("-", "_"),
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # version ff is forbidden
        PARENT + "-extra",  # version 00 has exactly four fields
        PARENT[:-1],
        f"00-{TRACE_ID}-00f067aa0ba902b7-0g",
        "00-" + "a" * 300,
        PARENT + "\r\nx-injected: 1",  # a line break never passes
    ],
)
def test_anything_but_a_w3c_traceparent_is_dropped(value: str) -> None:
    assert parse(value) is None
    assert parse(value, "vendor=1") is None  # no tracestate without a valid traceparent


def test_a_later_version_is_read_as_version_00() -> None:
    later = f"01-{TRACE_ID}-00f067aa0ba902b7-01-more-fields"
    assert parse(later) == TraceContext(PARENT)
    assert parse(f"01-{TRACE_ID}-00f067aa0ba902b7-01x") is None


def test_message_headers_may_hold_bytes_and_leading_spaces() -> None:
    headers = {"traceparent": f"  {PARENT}".encode(), "tracestate": b"congo=t61rcWkgMzE"}
    assert from_headers(headers) == TraceContext(PARENT, "congo=t61rcWkgMzE")
    assert from_headers({"hookline-shard": "3"}) is None
    assert from_headers({"traceparent": 12}) is None


def test_a_well_formed_tracestate_rides_along_trimmed() -> None:
    state = "rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE,,tenant@vendor=x"
    context = parse(PARENT, state)
    assert context is not None
    assert context.tracestate == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,tenant@vendor=x"
    assert context.headers() == {"traceparent": PARENT, "tracestate": context.tracestate}


@pytest.mark.parametrize(
    "state",
    [
        "novalue",
        "Upper=1",  # keys are lowercase
        "a=1,a=2",  # a key once
        "a=has,comma",
        "a=" + "x" * 300,
        ",".join(f"k{n}=v" for n in range(33)),  # at most 32 members
        ",".join(f"{key}={key * 200}" for key in "abc"),  # over 512 characters
        "a=line\nbreak",
    ],
)
def test_a_malformed_or_long_tracestate_is_left_out_and_the_traceparent_kept(state: str) -> None:
    assert parse(PARENT, state) == TraceContext(PARENT, None)
