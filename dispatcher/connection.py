"""The HTTP layer under the sender: keep-alive pools pinned to checked addresses, and a
hard deadline for every request.

The sender talks to urllib3's connection pools directly: requests' session and adapter
layers cost about as much CPU again as the POST itself, and the dispatcher needs none of
what they add (cookies, redirects, proxies, netrc).

Pinning: a pool is keyed by the address the SSRF guard checked, never by the name, so DNS
cannot change between the check and the connect; the name travels in the `Host` header.
For https, the pool sends SNI for that name and the TLS context verifies the certificate
against it, not against the address.

Deadline: urllib3's timeouts bound each socket read, so a server that sends one byte a
second never trips them. The `Watchdog` thread shuts down the socket of any request that
outlives its deadline; the blocked read then returns at once, whether it was waiting for
the status line, the headers or the body.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

WATCHDOG_TICK_S = 0.05
MAX_POOLS = 1024
# The request being sent by this thread, so that its connection can register its socket.
_current = threading.local()


class Deadline:
    """The deadline of one request and the sockets it used."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # The plain socket method, also for TLS sockets: SSLSocket.shutdown would drop its SSL
    # object under the thread that is reading from it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """One thread that ends every request still running at its deadline."""

    def __init__(self, tick_s: float = WATCHDOG_TICK_S) -> None:
        self._tick_s = tick_s
        self._active: set[Deadline] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, at: float) -> Iterator[Deadline]:
        """Sockets this thread's requests use inside the block are shut down at `at`."""
        deadline = Deadline(at)
        with self._lock:
            self._active.add(deadline)
            if self._thread is None:
                self._stopped = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stopped,), name="hookline-deadlines",
                    daemon=True,
                )  # fmt: skip
                self._thread.start()
        _current.deadline = deadline
        try:
            yield deadline
        finally:
            _current.deadline = None
            with self._lock:
                self._active.discard(deadline)

    def close(self) -> None:
        """Stop the thread; a later `guard` starts a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopped.set()
        if thread is not None:
            thread.join(1)

    def _run(self, stopped: threading.Event) -> None:
        while not stopped.wait(self._tick_s):
            now = time.monotonic()
            with self._lock:
                due = [d for d in self._active if d.at <= now and not d.expired]
            for deadline in due:
                deadline.expire()


def _watch(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _OneWrite:
    """Sends the head and the body of a request in one write, then registers the socket
    with the running deadline before waiting for the answer.

    urllib3 writes the head and then the body: two syscalls, two segments, and two wake-ups
    of the receiver per webhook, which costs more CPU than the rest of the POST on a busy
    host. Everything written after the head is held until the response is awaited.
    """

    _held: list[bytes] | None = None

    def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        # Connect now, as an unheld send would: urllib3 switches the socket to the read
        # timeout only if the connection is open once the request is written, so a fresh
        # connection would otherwise wait for its answer no longer than the connect timeout.
        if self.sock is None:  # type: ignore[attr-defined]
            self.connect()  # type: ignore[attr-defined]
        self._held = []
        super().endheaders(message_body, encode_chunked=encode_chunked)  # type: ignore[misc]

    def send(self, data: Any) -> None:
        if self._held is not None and isinstance(data, bytes | bytearray | memoryview):
            self._held.append(bytes(data))
            return
        self._flush()
        super().send(data)  # type: ignore[misc]

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held:
            super().send(b"".join(held))  # type: ignore[misc]

    def getresponse(self) -> HTTPResponse:
        self._flush()
        _watch(self.sock)  # type: ignore[attr-defined]
        return super().getresponse()  # type: ignore[misc,no-any-return]

    def close(self) -> None:
        self._held = None
        super().close()  # type: ignore[misc]


class _WatchedHTTPConnection(_OneWrite, HTTPConnection):  # type: ignore[misc]
    pass


class _WatchedHTTPSConnection(_OneWrite, HTTPSConnection):  # type: ignore[misc]
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


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


PoolKey = tuple[str, str, int, str]  # scheme, checked address, port, name (SNI)


class Pools:
    """Keep-alive pools, one per checked address and name; the least recently used go
    first once there are `max_pools`. Thread-safe."""

    def __init__(self, *, verify: bool | str, maxsize: int, max_pools: int = MAX_POOLS) -> None:
        self._context = tls_context(verify)
        self._maxsize = maxsize
        self._max_pools = max_pools
        self._pools: OrderedDict[PoolKey, HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, scheme: str, address: str, port: int, name: str) -> HTTPConnectionPool:
        key = (scheme, address, port, name)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            pool = self._new(key)
            self._pools[key] = pool
            evicted = (
                self._pools.popitem(last=False)[1] if len(self._pools) > self._max_pools else None
            )
        if evicted is not None:
            evicted.close()  # in-flight requests keep their connection; it closes on return
        return pool

    def _new(self, key: PoolKey) -> HTTPConnectionPool:
        scheme, address, port, name = key
        # Not blocking: a thread never waits for a connection; beyond `maxsize` (more
        # threads than that on one target) the extra connection is closed after use.
        if scheme == "https":
            return _HTTPSPool(
                address, port, maxsize=self._maxsize, block=False, retries=False,
                ssl_context=self._context, server_hostname=name,
            )  # fmt: skip
        return _HTTPPool(address, port, maxsize=self._maxsize, block=False, retries=False)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.close()
