"""The ingest span of `POST /v1/events` and `/v1/events/batch`, when the API traces.

The request's own `traceparent` (and `tracestate`) makes it a child of the caller's trace,
when it is W3C; anything else is ignored without a word (no error, no log line: it is the
caller's text) and the request starts a trace of its own. The span's context is what the
accepted events carry to the router. Off (no `Tracing`), a request gets a context manager
that does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from common.tracing import TraceContext, parse
from common.tracing import names as trace
from hookline.api.errors import ApiError

if TYPE_CHECKING:
    from common.tracing import Tracing

ACCEPTED = 202


def ingest(
    tracing: Tracing | None,
    traceparent: object,
    tracestate: object,
    *,
    route: str,
    tenant: str,
    events: int,
    start_ns: int | None = None,
) -> AbstractContextManager[TraceContext | None]:
    """The span of one ingest request, yielding the context its events carry; without
    `tracing`, a context manager that yields None and does nothing."""
    if tracing is None:
        return contextlib.nullcontext()
    return _span(tracing, traceparent, tracestate, route, tenant, events, start_ns)


@contextlib.contextmanager
def _span(
    tracing: Tracing,
    traceparent: object,
    tracestate: object,
    route: str,
    tenant: str,
    events: int,
    start_ns: int | None,
) -> Iterator[TraceContext]:
    span = tracing.ingest(
        parse(traceparent, tracestate), route=route, tenant=tenant, events=events,
        start_ns=start_ns,
    )  # fmt: skip
    try:
        yield span.context
    except ApiError as exc:
        span.set({trace.STATUS_CODE: exc.status_code})
        span.fail(exc.code)
        raise
    except BaseException as exc:
        span.fail(type(exc).__name__)
        raise
    else:
        span.set({trace.STATUS_CODE: ACCEPTED})
    finally:
        span.end()
