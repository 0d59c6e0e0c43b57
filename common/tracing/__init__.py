"""Tracing: W3C trace context through Hookline, and OpenTelemetry spans when it is on.

The only package that imports OpenTelemetry (an import contract). `context` checks and
carries W3C headers without it; `setup` (`configure`) reads the `OTEL_*` variables and,
only when they turn tracing on, loads the SDK and returns a `Tracing`; `spans` wraps the
tracer; `pipeline` starts the spans the services need (ingest, publish, route, attempt,
settle). See docs/operations.md, "Tracing".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.tracing.context import (
    TRACEPARENT,
    TRACESTATE,
    TraceContext,
    from_headers,
    parse,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

    from common.tracing.spans import Kind, Span, Tracing

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "Kind",
    "Span",
    "TraceContext",
    "Tracing",
    "configure",
    "from_headers",
    "parse",
]


def configure(role: str, *, processor: SpanProcessor | None = None) -> Tracing | None:
    """This process's `Tracing` from the `OTEL_*` variables, or None (off: the default).
    The SDK is imported only when tracing is on."""
    from common.tracing import setup

    return setup.configure(role, processor=processor)


def __getattr__(name: str) -> object:
    # `Tracing`, `Span` and `Kind` load the OpenTelemetry API: only once asked for.
    if name in ("Kind", "Span", "Tracing"):
        from common.tracing import spans

        return getattr(spans, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
