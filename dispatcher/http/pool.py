"""The HTTP layer under the sender: one small HTTP/1.1 client on keep-alive sockets pinned
to checked addresses, with a hard deadline for every request (the exchange itself, its
framing and its deadline are in `exchange.py`; the pools are here).

Why not urllib3 or requests: a webhook is one POST with a small body and a small answer,
and for that the general clients spend more CPU than everything else in a delivery
(`http.client` parses every response head through the `email` package; requests adds
sessions, adapters, cookies, proxies). This client writes the request in one `send` and
parses the status line and headers itself: about a third of urllib3's CPU per POST.

Pinning: a pool is keyed by the address the SSRF guard checked, never by the name, so DNS
cannot change between the check and the connect; the name travels in the `Host` header.
For https, the socket sends SNI for that name and the TLS context verifies the certificate
against it, not against the address.

Egress proxy: with one configured (`proxy.py`), every connection is a CONNECT tunnel to
the checked address, and TLS runs inside it (inside the proxy's own TLS for an https://
proxy: `tls_in_tls.py`); a pool still holds one target's connections.

Deadline: connecting and the TLS handshake wait at most until the request's deadline too.
A connection is reused only when its answer was read to the end, the server did not ask to
close, and it is still quiet when taken again.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import OrderedDict

from common.egress import Proxy
from dispatcher.http.exchange import Conn, DeadlineExceeded, Dropped, Response, exchange
from dispatcher.http.proxy import open_tunnel
from dispatcher.http.tls_in_tls import wrap_tls

MAX_POOLS = 1024


def host_name(host_header: str) -> str:
    """The name in a Host header value: without the port, without IPv6 brackets."""
    if host_header.startswith("["):
        return host_header[1 : host_header.index("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """Certificates checked against the name (`server_hostname`), with certifi's roots,
    or the CA file `verify` names; `verify=False` only for tests that say so."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    try:
        import certifi
    except ImportError:  # the system store, then
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class Pool:
    """Idle keep-alive connections to one checked address (and name, for TLS)."""

    def __init__(
        self,
        scheme: str,
        address: str,
        port: int,
        name: str,
        *,
        context: ssl.SSLContext | None,
        maxsize: int,
        proxy: Proxy | None = None,
    ) -> None:
        self.scheme, self.address, self.port, self.name = scheme, address, port, name
        self._context = context
        self._proxy = proxy
        self._maxsize = maxsize
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._closed = False

    def request(
        self, request: bytes, *, connect_timeout_s: float, deadline_at: float, limit: int
    ) -> Response:
        """One request and its answer. Raises `DeadlineExceeded`, or `OSError` (including
        `ssl.SSLError`) for a connection that could not be made or broke before an answer."""
        conn = self._idle_connection()
        while True:
            if conn is None:
                conn = self._connect(connect_timeout_s, deadline_at)
            try:
                response = exchange(conn, request, deadline_at, limit)
            except Dropped:
                conn.close()
                conn = None  # the server had closed it while idle: once more, on a new one
                continue
            except BaseException:
                conn.close()
                raise
            break
        if response.reusable:
            self._give_back(conn)
        else:
            conn.close()
        return response

    def _idle_connection(self) -> Conn | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if conn.quiet():
                conn.reused = True
                return conn
            conn.close()

    def _connect(self, connect_timeout_s: float, deadline_at: float) -> Conn:
        remaining = deadline_at - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded
        if self._proxy is not None:  # a tunnel to the checked address (proxy.py)
            sock = open_tunnel(
                self._proxy,
                self.address,
                self.port,
                connect_timeout_s=connect_timeout_s,
                deadline_at=deadline_at,
            )
        else:
            sock = socket.create_connection(
                (self.address, self.port), timeout=min(connect_timeout_s, remaining)
            )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is None:
                return Conn(sock)
            remaining = max(deadline_at - time.monotonic(), 0.001)
            return Conn(wrap_tls(self._context, sock, self.name, remaining))
        except BaseException:
            sock.close()
            raise

    def _give_back(self, conn: Conn) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections; requests in flight close theirs when they end."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for conn in idle:
            conn.close()


PoolKey = tuple[str, str, int, str]  # scheme, checked address, port, name (SNI)


class Pools:
    """Keep-alive pools, one per checked address and name; the least recently used go
    first once there are `max_pools`. Thread-safe."""

    def __init__(
        self,
        *,
        verify: bool | str,
        maxsize: int,
        max_pools: int = MAX_POOLS,
        proxy: Proxy | None = None,
    ) -> None:
        self._context = tls_context(verify)
        self._proxy = proxy
        self._maxsize = maxsize
        self._max_pools = max_pools
        self._pools: OrderedDict[PoolKey, Pool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, scheme: str, address: str, port: int, name: str) -> Pool:
        key = (scheme, address, port, name)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            context = self._context if scheme == "https" else None
            pool = Pool(
                scheme, address, port, name,
                context=context, maxsize=self._maxsize, proxy=self._proxy,
            )  # fmt: skip
            self._pools[key] = pool
            evicted = (
                self._pools.popitem(last=False)[1] if len(self._pools) > self._max_pools else None
            )
        if evicted is not None:
            evicted.close()
        return pool

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.close()
