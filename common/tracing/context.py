"""W3C trace context (https://www.w3.org/TR/trace-context/) as it enters and leaves Hookline.

Checked here, once, wherever a context arrives from outside (an HTTP request, the SDK's
caller, a message header): a `traceparent` that is not W3C is dropped, never answered with
an error and never logged (it is a tenant's text). A `tracestate` rides along only with a
valid `traceparent` and only when it is well formed and short. No OpenTelemetry import:
the API and the transports read and write these headers without loading the SDK.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# Version 00 is exactly 55 characters; a later version may append fields, which we do not
# read (and send on as version 00, as the specification asks of a version-00 reader).
MAX_TRACEPARENT_CHARS = 256
# What the specification asks every vendor to pass on at least; longer ones are dropped.
MAX_TRACESTATE_CHARS = 512
MAX_TRACESTATE_MEMBERS = 32

_HEX = frozenset("0123456789abcdef")
_KEY = re.compile(
    r"[a-z][a-z0-9_\-*/]{0,255}"
    r"|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}"
)
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")


@dataclass(frozen=True)
class TraceContext:
    """A checked W3C context: `traceparent` always version 00, `tracestate` or None."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    @property
    def span_id(self) -> str:
        return self.traceparent[36:52]

    @property
    def sampled(self) -> bool:
        return bool(int(self.traceparent[53:55], 16) & 1)

    def headers(self) -> dict[str, str]:
        """As message or HTTP headers."""
        if self.tracestate is None:
            return {TRACEPARENT: self.traceparent}
        return {TRACEPARENT: self.traceparent, TRACESTATE: self.tracestate}


def parse(traceparent: object, tracestate: object = None) -> TraceContext | None:
    """The context these header values carry, or None when `traceparent` is not W3C."""
    parent = _traceparent(_text(traceparent))
    if parent is None:
        return None
    return TraceContext(parent, _tracestate(_text(tracestate)))


def from_headers(headers: Mapping[str, Any]) -> TraceContext | None:
    """The context of a message (pika hands header strings over as `str` or `bytes`)."""
    traceparent = headers.get(TRACEPARENT)
    if traceparent is None:
        return None
    return parse(traceparent, headers.get(TRACESTATE))


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


def _traceparent(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip(" \t")
    if not 55 <= len(value) <= MAX_TRACEPARENT_CHARS:
        return None
    version, trace_id, span_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2:3] != "-" or value[35:36] != "-" or value[52:53] != "-":
        return None
    if not _HEX.issuperset(version + trace_id + span_id + flags) or version == "ff":
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    if len(value) > 55 and (version == "00" or value[55] != "-"):
        return None
    return f"00-{trace_id}-{span_id}-{flags}"


def _tracestate(value: str | None) -> str | None:
    """The list, its members trimmed, when every member is well formed; else None."""
    if value is None or len(value) > MAX_TRACESTATE_CHARS:
        return None
    members = [member.strip(" \t") for member in value.split(",")]
    members = [member for member in members if member]
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    keys = set()
    for member in members:
        key, equals, item = member.partition("=")
        if not equals or not _KEY.fullmatch(key) or not _VALUE.fullmatch(item) or key in keys:
            return None
        keys.add(key)
    return ",".join(members)
