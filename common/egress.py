"""The egress proxy setting, parsed: `HOOKLINE_EGRESS_PROXY=http(s)://[user:pass@]host:port`,
and for an `https://` proxy the CA bundle that vouches for it (`HOOKLINE_EGRESS_PROXY_CA`;
unset: the system's).

Parsed when `Settings` is built, so a malformed value stops a process at start, with a
message that never repeats the credentials. The tunnel itself is `dispatcher/http/proxy.py`.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SCHEMES = ("http", "https")


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # "Basic ...", secret
    tls: bool = False  # https://: TLS to the proxy, then CONNECT inside it
    ca_file: str | None = None  # what vouches for an https:// proxy; None: the system's CAs

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"  # the form to log: no credentials


def parse_proxy(url: str, ca_file: str | None = None) -> Proxy:
    """The proxy `url` names; `ValueError` (without the credentials) when it is not
    `http(s)://[user:pass@]host:port`, or when `ca_file` is given for an `http://` proxy."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("the egress proxy URL does not parse") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(
            "the egress proxy URL must start with http:// or https:// (a CONNECT proxy)"
        )
    if not parts.hostname or port is None:
        raise ValueError("the egress proxy URL needs a host and a port: http(s)://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the egress proxy URL has no path: http(s)://[user:pass@]host:port")
    if ca_file is not None and parts.scheme != "https":
        raise ValueError(
            "HOOKLINE_EGRESS_PROXY_CA is set but the egress proxy is not https://: "
            "there is no TLS to the proxy for it to check"
        )
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Proxy(parts.hostname, port, authorization, parts.scheme == "https", ca_file)


def check_ca_file(path: str) -> str:
    """`path` if it reads as a PEM bundle of certificates; else `ValueError` saying why
    (at start, rather than at the first delivery)."""
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ValueError(f"HOOKLINE_EGRESS_PROXY_CA: there is no file {path}") from None
    except ssl.SSLError as exc:
        reason = (exc.reason or "a certificate does not parse").lower().replace("_", " ")
        raise ValueError(
            f"HOOKLINE_EGRESS_PROXY_CA: {path} is not a PEM bundle of certificates ({reason})"
        ) from None
    except OSError as exc:
        raise ValueError(f"HOOKLINE_EGRESS_PROXY_CA: cannot read {path} ({exc.strerror})") from None
    return path
