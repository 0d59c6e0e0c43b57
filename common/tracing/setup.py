"""Tracing set up from OpenTelemetry's standard `OTEL_*` variables, off unless they say so.

Unlike the OpenTelemetry default (export OTLP to localhost), Hookline traces only when told
where to: `OTEL_TRACES_EXPORTER=otlp` (or `console`), or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) with the exporter
unset. `OTEL_SDK_DISABLED=true` turns it off whatever else is set. A value that cannot work
(an unknown exporter or sampler, the gRPC protocol, which is not installed, a ratio outside
0..1) stops the process with one line, as a `HOOKLINE_*` setting would: a typo must not
silently trace everything, or nothing.

The exporter reads its own variables (endpoint, headers, timeout, compression,
certificates) as the SDK documents them; spans are exported in batches from a thread of
the SDK, so a slow collector costs dropped spans, never a delivery.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from common import __version__
from common.errors import ConfigurationError
from common.tracing.environment import exporters
from common.tracing.spans import Tracing

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def sampler(environ: Mapping[str, str]) -> Sampler:
    """`OTEL_TRACES_SAMPLER` and its `_ARG`; OpenTelemetry's default, parent-based always-on."""
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in SAMPLERS:
        raise ConfigurationError("OTEL_TRACES_SAMPLER must be one of " + ", ".join(SAMPLERS))
    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "parentbased_always_on":
        return ParentBased(ALWAYS_ON)
    if name == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    ratio = TraceIdRatioBased(_ratio(environ.get("OTEL_TRACES_SAMPLER_ARG", "")))
    return ratio if name == "traceidratio" else ParentBased(ratio)


def _ratio(text: str) -> float:
    if not text.strip():
        return 1.0
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ConfigurationError(
            "OTEL_TRACES_SAMPLER_ARG must be the share of traces kept, a number from 0 to 1 "
            "(0.01 keeps one in a hundred)"
        )
    return ratio


def resource(role: str) -> Resource:
    """The standard resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`); without a
    name of the operator's, the service is called after the process: `hookline-<role>`."""
    found = Resource.create({SERVICE_VERSION: __version__})
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        found = found.merge(Resource({SERVICE_NAME: f"hookline-{role}"}))
    return found


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = next((environ[p].strip() for p in _PROTOCOLS if environ.get(p, "").strip()), "")
    if protocol not in ("", "http/protobuf"):
        raise ConfigurationError(
            "OTEL_EXPORTER_OTLP_PROTOCOL: Hookline exports OTLP over HTTP (http/protobuf) "
            "only; point it at the collector's HTTP port (4318)"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def configure(role: str, *, processor: SpanProcessor | None = None) -> Tracing | None:
    """This process's tracing, from the environment, or None when it leaves tracing off.
    `processor` (the tests' in-memory exporter) stands in for the exporters it names."""
    environ = os.environ
    names = exporters(environ)
    if processor is None and not names:
        return None
    chosen = sampler(environ)
    provider = TracerProvider(sampler=chosen, resource=resource(role))
    if processor is not None:
        provider.add_span_processor(processor)
    for name in [] if processor is not None else names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    return Tracing(provider, parent_based=isinstance(chosen, ParentBased))
