"""Tracing: W3C trace context through Hookline, and OpenTelemetry spans when it is on.

The only package that imports OpenTelemetry (an import contract). `context` checks and
carries W3C headers, and `environment` decides from the `OTEL_*` variables whether tracing
is on, both without it; only then does `setup` load the SDK (sampler, exporters, resource)
and return a `Tracing` (`spans`), which starts the spans the services need: ingest,
publish, route, attempt, settle (`names`). See docs/operations.md, "Tracing".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from common.tracing.context import (
    TRACEPARENT,
    TRACESTATE,
    TraceContext,
    from_headers,
    parse,
)
from common.tracing.environment import exporters

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

    from common.tracing.spans import Span, Tracing

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "Span",
    "TraceContext",
    "Tracing",
    "configure",
    "from_headers",
    "parse",
]


def configure(role: str, *, processor: SpanProcessor | None = None) -> Tracing | None:
    """This process's `Tracing` from the `OTEL_*` variables, or None (off: the default).
    `processor` (the tests' in-memory exporter) stands in for the exporters they name.
    The SDK is imported only when tracing is on."""
    if processor is None and not exporters(os.environ):
        return None
    from common.tracing import setup

    return setup.configure(role, processor=processor)


def __getattr__(name: str) -> object:
    # `Tracing` and `Span` load the OpenTelemetry API: only once asked for.
    if name in ("Span", "Tracing"):
        from common.tracing import spans

        return getattr(spans, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
