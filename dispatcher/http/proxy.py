"""The egress proxy: deliveries and handshakes leave through an HTTP CONNECT proxy when
`HOOKLINE_EGRESS_PROXY` is set (`http(s)://[user:pass@]host:port`).

Every target, http or https, is reached through a tunnel: a TCP connection to the proxy,
for an `https://` proxy TLS to it (its certificate checked against its name, with the
system's CAs or `HOOKLINE_EGRESS_PROXY_CA`: a proxy nothing vouches for is refused before
anything is sent to it), `CONNECT <checked address>:<port>`, then (for https targets) TLS
to the target over it, with SNI and the certificate check for the target's name; through
an https proxy that is TLS inside TLS (`tls_in_tls.py`). The tunnel names the address the SSRF
guard checked, not the host name, so the proxy cannot resolve the name to somewhere else:
pinning holds through the proxy. The proxy itself is exempt from the guard because the
operator configured it; it is never a target.

The credentials live only in the `Proxy-Authorization` header value (`common/egress.py`);
they are kept out of `repr`, out of error messages and out of logs (a failure names the
proxy's HTTP status, never what was sent).
"""

from __future__ import annotations

import functools
import http
import socket
import ssl
import time

from common.egress import Proxy
from dispatcher.http.exchange import DeadlineExceeded

MAX_ANSWER_BYTES = 16 * 1024
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


class ProxyError(OSError):
    """The egress proxy could not be reached or would not open the tunnel; an `OSError`,
    so an attempt that meets it fails as a connection failure does, and is retried."""


@functools.cache
def proxy_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """How an https:// proxy is checked: its name and chain, against `ca_file` or the
    system's CAs (not certifi's, as targets are: a proxy is the operator's own, often
    under a company CA that the system store holds). One per CA file: loading it is slow."""
    return ssl.create_default_context(cafile=ca_file)


def connect_request(proxy: Proxy, address: str, port: int) -> bytes:
    authority = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"proxy-authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_answer(sock: socket.socket, deadline_at: float) -> int:
    """The status of the proxy's answer to CONNECT; nothing past its head is read."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        remaining = deadline_at - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded
        sock.settimeout(remaining)
        try:
            byte = sock.recv(1)  # one at a time: the tunnel's bytes must stay in the socket
        except TimeoutError:
            raise DeadlineExceeded from None
        if not byte:
            raise ProxyError("the egress proxy closed the connection before answering CONNECT")
        head += byte
        if len(head) > MAX_ANSWER_BYTES:
            raise ProxyError("the egress proxy's answer to CONNECT is too large")
    parts = bytes(head).split(b"\r\n", 1)[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProxyError("the egress proxy did not answer CONNECT with HTTP/1.x")
    return int(parts[1])


def open_tunnel(
    proxy: Proxy, address: str, port: int, *, connect_timeout_s: float, deadline_at: float
) -> socket.socket:
    """A socket that reaches `address:port` through `proxy`. Raises `ProxyError`,
    `DeadlineExceeded`, or `OSError` for a broken connection to the proxy."""
    remaining = deadline_at - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded
    try:
        sock = socket.create_connection(
            (proxy.host, proxy.port), timeout=min(connect_timeout_s, remaining)
        )
    except OSError as exc:  # a timeout too: the proxy, not the target, did not answer
        raise ProxyError(f"cannot reach the egress proxy {proxy}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(max(deadline_at - time.monotonic(), 0.001))
        if proxy.tls:
            sock = _tls_to(proxy, sock)
        sock.sendall(connect_request(proxy, address, port))
        status = _read_answer(sock, deadline_at)
        if not 200 <= status < 300:
            reason = _REASONS.get(status, "")
            raise ProxyError(f"the egress proxy refused the tunnel: HTTP {status} {reason}")
    except BaseException:
        sock.close()
        raise
    return sock


def _tls_to(proxy: Proxy, sock: socket.socket) -> ssl.SSLSocket:
    """TLS to the proxy itself, within the socket's timeout; a certificate that does not
    check out is a `ProxyError` naming the proxy and the reason, never its credentials."""
    context = proxy_tls_context(proxy.ca_file)
    try:
        return context.wrap_socket(sock, server_hostname=proxy.host)
    except ssl.SSLCertVerificationError as exc:
        raise ProxyError(
            f"the egress proxy {proxy} failed the certificate check: {exc.verify_message}"
            " (the proxy's CA: HOOKLINE_EGRESS_PROXY_CA, else the system's)"
        ) from None
    except ssl.SSLError as exc:
        reason = (exc.reason or type(exc).__name__).lower().replace("_", " ")
        raise ProxyError(f"TLS to the egress proxy {proxy} failed: {reason}") from None
    except TimeoutError:
        raise DeadlineExceeded from None
