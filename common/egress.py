"""The egress proxy setting, parsed: `HOOKLINE_EGRESS_PROXY=http://[user:pass@]host:port`.

Parsed when `Settings` is built, so a malformed value stops a process at start, with a
message that never repeats the credentials. The tunnel itself is `dispatcher/http/proxy.py`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # "Basic ...", secret

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}"  # the form to log: no credentials


def parse_proxy(url: str) -> Proxy:
    """The proxy `url` names; `ValueError` (without the credentials) when it is not
    `http://[user:pass@]host:port`."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("the egress proxy URL does not parse") from None
    if parts.scheme != "http":
        raise ValueError("the egress proxy URL must start with http:// (a CONNECT proxy)")
    if not parts.hostname or port is None:
        raise ValueError("the egress proxy URL needs a host and a port: http://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the egress proxy URL has no path: http://[user:pass@]host:port")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Proxy(parts.hostname, port, authorization)
