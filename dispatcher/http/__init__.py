"""The HTTP client of the dispatcher: a webhook POST to a checked, pinned address with a hard
deadline, ending in a `SendResult` whatever happens.

`client.py` (the `Sender`: SSRF check, the gate around the POST, one result), `request.py`
(body, signed headers, the request bytes), `pool.py` (keep-alive connections pinned to
checked addresses, TLS), `exchange.py` (one request and its answer on one socket),
`proxy.py` (the CONNECT tunnel through the egress proxy, over TLS to an https:// one),
`tls_in_tls.py` (an https target's TLS inside an https:// proxy's), `shape.py` (what an
attempt's headers looked like, without secrets, for the attempt's row).
"""

from dispatcher.http.client import Gate, OpenGate, Sender, SendResult
from dispatcher.http.exchange import DeadlineExceeded, ProtocolError, Response
from dispatcher.http.pool import Pool, Pools, host_name, tls_context
from dispatcher.http.proxy import ProxyError
from dispatcher.http.request import (
    RESERVED_HEADERS,
    USER_AGENT,
    build_headers,
    request_bytes,
    request_target,
    webhook_body,
)
from dispatcher.http.shape import MASK, HeaderShape, header_shape, headers_shown

__all__ = [
    "MASK",
    "RESERVED_HEADERS",
    "USER_AGENT",
    "DeadlineExceeded",
    "Gate",
    "HeaderShape",
    "OpenGate",
    "Pool",
    "Pools",
    "ProtocolError",
    "ProxyError",
    "Response",
    "SendResult",
    "Sender",
    "build_headers",
    "header_shape",
    "headers_shown",
    "host_name",
    "request_bytes",
    "request_target",
    "tls_context",
    "webhook_body",
]
