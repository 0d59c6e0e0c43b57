"""The webhook request, as bytes: body, headers (signed at send time), target, one write.

Shared with the verification handshake (`hookline/api/verification.py`), which sends its
challenge the way deliveries are sent.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlsplit

from common import __version__
from common.signing import signature_header
from common.ssrf import Target
from common.tracing import TraceContext
from common.wire import Event

USER_AGENT = f"Hookline/{__version__}"
# Headers Hookline owns; a subscription's static headers cannot replace them. The trace
# context is Hookline's too: it is the attempt's, sent to subscriptions that opted in.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
        "content-length", "transfer-encoding", "user-agent", "host", "connection",
        "traceparent", "tracestate",
    }
)  # fmt: skip


def webhook_body(event: Event) -> bytes:
    return json.dumps(event.webhook_body(), separators=(",", ":")).encode()


def build_headers(
    static: Mapping[str, str],
    msg_id: str,
    timestamp: int,
    body: bytes,
    secrets: Sequence[str],
    trace: TraceContext | None = None,
) -> dict[str, str]:
    """The request headers: the subscription's own first, then the ones Hookline owns,
    then the attempt's trace context when the subscription opted in (not signed: the
    signature covers the id, the timestamp and the body only)."""
    headers = {k: v for k, v in static.items() if k.lower() not in RESERVED_HEADERS}
    headers.update(
        {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
    )
    if trace is not None:
        headers.update(trace.headers())
    return headers


@functools.lru_cache(maxsize=4096)
def request_target(target: Target) -> tuple[str, str]:
    """The path (with query, without fragment) to request, and the Host header value."""
    parts = urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != (443 if target.scheme == "https" else 80):
        host = f"{host}:{target.port}"
    return path, host


_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))
_HEADER_FORBIDDEN = frozenset("\r\n\0")
_NAME_FORBIDDEN = frozenset(" \t:\r\n\0")


def request_bytes(path: str, host: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """The whole request, head and body, as one write. Raises `ValueError` for a header
    that would break the head (a CR or LF, say, in a subscription's static header)."""
    if not (path.isascii() and path.isprintable()) or " " in path:
        path = quote(path, safe=_PATH_SAFE)  # as browsers and urllib3 do with such paths
    lines = [f"POST {path} HTTP/1.1", f"host: {host}"]
    for name, value in headers.items():
        if not name or _NAME_FORBIDDEN.intersection(name) or _HEADER_FORBIDDEN.intersection(value):
            raise ValueError(f"header {name[:40]!r} holds a character HTTP does not allow")
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}\r\n\r\n")
    try:
        head = "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("a header holds a character outside latin-1") from None
    return head + body
