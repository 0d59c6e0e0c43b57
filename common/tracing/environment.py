"""Whether the `OTEL_*` variables turn tracing on, and with which exporters: read before
anything of OpenTelemetry is imported, so a process that does not trace never loads the
SDK (see `setup.py` for the rest of the set-up and the rules)."""

from __future__ import annotations

from collections.abc import Mapping

from common.errors import ConfigurationError

EXPORTERS = ("otlp", "console")
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def exporters(environ: Mapping[str, str]) -> list[str]:
    """The exporters the variables ask for; empty: tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not named:
        return ["otlp"] if any(environ.get(name, "").strip() for name in _ENDPOINTS) else []
    chosen = [name.strip() for name in named.split(",") if name.strip()]
    if chosen == ["none"]:
        return []
    for name in chosen:
        if name not in EXPORTERS:
            raise ConfigurationError(
                "OTEL_TRACES_EXPORTER names an exporter Hookline does not have; "
                "use otlp, console, none, or a comma-separated list of them"
            )
    return list(dict.fromkeys(chosen))
