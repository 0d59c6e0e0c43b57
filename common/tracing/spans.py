"""`Tracing`: the spans Hookline's services start, over an OpenTelemetry tracer provider.

Services hold a `Tracing` only when tracing is on (`configure` returns None otherwise), so
their hot paths test one reference and, off, build no span and touch no header. What they
get back is our `Span`, never an OpenTelemetry type: the SDK stays behind this package.

The names and attributes are the contract in docs/operations.md ("Tracing"). Attributes
follow OpenTelemetry's semantic conventions where one fits (`server.address`,
`http.response.status_code`, `error.type`); the rest are `hookline.*`. Never a full URL (its
query or user info may hold a credential), a header value or event data.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from common import __version__
from common.tracing import names
from common.tracing.context import TraceContext
from common.wire import DeliveryMessage

Attributes = Mapping[str, str | int | float | bool]


class Kind(enum.Enum):
    SERVER = SpanKind.SERVER
    CLIENT = SpanKind.CLIENT
    PRODUCER = SpanKind.PRODUCER
    CONSUMER = SpanKind.CONSUMER
    INTERNAL = SpanKind.INTERNAL


class Span:
    """One span, started by `Tracing.start`; end it exactly once."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def recording(self) -> bool:
        """False for a span the sampler left out: setting attributes on it is wasted work."""
        return self._span.is_recording()

    @property
    def context(self) -> TraceContext:
        """This span as the parent of what it causes: for message and webhook headers."""
        ctx = self._span.get_span_context()
        parent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        state = ctx.trace_state.to_header() if ctx.trace_state else ""
        return TraceContext(parent, state or None)

    def set(self, attributes: Attributes) -> None:
        if self._span.is_recording():
            self._span.set_attributes(attributes)

    def fail(self, error_type: str, description: str | None = None) -> None:
        """Mark the span failed; `error_type` is a low-cardinality name (a class, a reason)."""
        if self._span.is_recording():
            self._span.set_attribute(names.ERROR_TYPE, error_type)
            self._span.set_status(Status(StatusCode.ERROR, description))

    def end(self, end_ns: int | None = None) -> None:
        self._span.end(end_time=end_ns)


class Tracing:
    """Starts Hookline's spans on one provider; `shutdown` exports what is still queued."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("hookline", __version__)

    def start(
        self,
        name: str,
        kind: Kind,
        *,
        parent: TraceContext | Span | None,
        attributes: Attributes | None = None,
        links: Sequence[TraceContext] = (),
        start_ns: int | None = None,
        inherit: bool = False,
    ) -> Span:
        """A span, child of `parent`; without one a new trace starts, unless `inherit`
        (the SDK's publish, inside its caller's own trace) makes the caller's current span
        the parent."""
        context: Context | None
        if isinstance(parent, Span):
            context = trace.set_span_in_context(parent._span, Context())
        elif parent is not None:
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote(parent)), Context())
        else:
            context = None if inherit else Context()
        span = self._tracer.start_span(
            name,
            context=context,
            kind=kind.value,
            attributes=attributes,
            links=[Link(remote(link)) for link in links] or None,
            start_time=start_ns,
            record_exception=False,  # an exception's message may quote a tenant's data
            set_status_on_exception=False,
        )
        return Span(span)

    # The spans of the pipeline (names.py); what is known only at the end, the caller sets.

    def ingest(
        self,
        parent: TraceContext | None,
        *,
        route: str,
        tenant: str,
        events: int,
        start_ns: int | None = None,
    ) -> Span:
        """An ingest request in the API; its events carry this span as their parent."""
        return self.start(
            names.INGEST,
            Kind.SERVER,
            parent=parent,
            attributes={
                names.HTTP_METHOD: "POST",
                names.HTTP_ROUTE: route,
                names.TENANT: tenant,
                names.EVENTS: events,
            },
            start_ns=start_ns,
        )

    def publish(self, parent: TraceContext | None, *, events: int) -> Span:
        """The SDK's publish: in the caller's own trace when no `parent` is given."""
        return self.start(
            names.PUBLISH, Kind.PRODUCER, parent=parent, attributes={names.EVENTS: events},
            inherit=True,
        )  # fmt: skip

    def route(
        self,
        parent: TraceContext | None,
        *,
        event_id: str,
        tenant: str,
        event_type: str,
        batch: int,
        start_ns: int,
    ) -> Span:
        """One event of a router batch (a trace of its own when it came without one)."""
        return self.start(
            names.ROUTE,
            Kind.CONSUMER,
            parent=parent,
            attributes={
                names.EVENT_ID: event_id,
                names.TENANT: tenant,
                names.EVENT_TYPE: event_type,
                names.BATCH_SIZE: batch,
            },
            start_ns=start_ns,
        )

    def attempt(self, parent: TraceContext | None, delivery: DeliveryMessage) -> Span:
        """One attempt of a delivery, child of the span that routed (or replayed) it."""
        return self.start(
            names.ATTEMPT,
            Kind.CLIENT,
            parent=parent,
            attributes={
                names.DELIVERY_ID: delivery.delivery_id,
                names.TENANT: delivery.tenant,
                names.EVENT_ID: delivery.event_id,
                names.SUBSCRIPTION_ID: delivery.subscription_id,
                names.ATTEMPT_NUMBER: delivery.attempt,
                names.REPLAY: delivery.replay,
                names.HTTP_METHOD: "POST",
            },
        )

    def settle(self, parent: Span, delivery: DeliveryMessage, *, batch: int, start_ns: int) -> Span:
        """The settling of one attempt's outcome, in a batch of `batch`."""
        return self.start(
            names.SETTLE,
            Kind.INTERNAL,
            parent=parent,
            attributes={names.DELIVERY_ID: delivery.delivery_id, names.BATCH_SIZE: batch},
            start_ns=start_ns,
        )

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        return self._provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self._provider.shutdown()


def remote(context: TraceContext) -> SpanContext:
    """The OpenTelemetry form of a context that arrived from elsewhere."""
    state = TraceState.from_header([context.tracestate]) if context.tracestate else None
    return SpanContext(
        trace_id=int(context.trace_id, 16),
        span_id=int(context.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(context.traceparent[53:55], 16)),
        trace_state=state,
    )
