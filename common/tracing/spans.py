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
import random
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
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
    """One span, started by `Tracing.start`; end it exactly once.

    This class itself is a span that sampling left out, made without the SDK: it records
    nothing and only carries a context onward (a new span id in its parent's trace, not
    sampled). With a parent-based sampler, that is all a child of an unsampled parent
    becomes, and most spans are such children (at 1 % sampling, 99 in 100): the SDK's own
    path for them costs several times as much. `_Recorded` is a span of the SDK.
    """

    __slots__ = ("_context",)

    def __init__(self, context: TraceContext) -> None:
        self._context = context

    @property
    def sampled(self) -> bool:
        """False for a span the sampler left out: setting attributes on it is wasted work,
        and so is a child span (a parent-based sampler leaves that out too)."""
        return False

    @property
    def context(self) -> TraceContext:
        """This span as the parent of what it causes: for message and webhook headers."""
        return self._context

    def set(self, attributes: Attributes) -> None:
        return None

    def fail(self, error_type: str, description: str | None = None) -> None:
        """Mark the span failed; `error_type` is a low-cardinality name (a class, a reason)."""
        return None

    def end(self, end_ns: int | None = None) -> None:
        return None


class _Recorded(Span):
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def sampled(self) -> bool:  # still true once ended, unlike the SDK's `is_recording`
        return self._span.get_span_context().trace_flags.sampled

    @property
    def context(self) -> TraceContext:
        ctx = self._span.get_span_context()
        parent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        state = ctx.trace_state.to_header() if ctx.trace_state else ""
        return TraceContext(parent, state or None)

    def set(self, attributes: Attributes) -> None:
        if self._span.is_recording():
            self._span.set_attributes(attributes)

    def fail(self, error_type: str, description: str | None = None) -> None:
        if self._span.is_recording():
            self._span.set_attribute(names.ERROR_TYPE, error_type)
            self._span.set_status(Status(StatusCode.ERROR, description))

    def end(self, end_ns: int | None = None) -> None:
        self._span.end(end_time=end_ns)


class Tracing:
    """Starts Hookline's spans on one provider; `shutdown` exports what is still queued."""

    def __init__(self, provider: TracerProvider, *, parent_based: bool) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("hookline", __version__)
        # The sampler keeps a child exactly when its parent was kept (`ParentBased` with
        # its default delegates, all `setup` builds): an unsampled parent needs no SDK.
        self._parent_based = parent_based

    def start(
        self,
        name: str,
        kind: Kind,
        *,
        parent: TraceContext | Span | None,
        attributes: Attributes | None = None,
        start_ns: int | None = None,
        inherit: bool = False,
    ) -> Span:
        """A span, child of `parent`; without one a new trace starts, unless `inherit`
        (the SDK's publish, inside its caller's own trace) makes the caller's current span
        the parent."""
        if isinstance(parent, Span) and not isinstance(parent, _Recorded):
            parent = parent.context  # a span made here without the SDK: only a context
        unsampled = self._unsampled(parent)
        if unsampled is not None:
            return unsampled
        context: Context | None
        if isinstance(parent, _Recorded):
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
            start_time=start_ns,
            record_exception=False,  # an exception's message may quote a tenant's data
            set_status_on_exception=False,
        )
        return _Recorded(span)

    def _unsampled(self, parent: TraceContext | Span | None) -> Span | None:
        """The span that sampling leaves out, made without the SDK, if this one is such."""
        if not self._parent_based or parent is None or parent.sampled:
            return None
        return Span(_unsampled_child(parent.context if isinstance(parent, Span) else parent))

    # The spans of the pipeline (names.py); what is known only at the end, the caller sets.
    # Those on a hot path (one per event, one per attempt) skip building their attributes
    # when sampling leaves them out.

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
        unsampled = self._unsampled(parent)
        if unsampled is not None:
            return unsampled
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
        unsampled = self._unsampled(parent)
        if unsampled is not None:
            return unsampled
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


def _unsampled_child(parent: TraceContext) -> TraceContext:
    """A context of a new span in `parent`'s trace, with its flags (not sampled)."""
    span_id = random.getrandbits(64) or 1
    flags = parent.traceparent[53:55]
    return TraceContext(f"00-{parent.trace_id}-{span_id:016x}-{flags}", parent.tracestate)
