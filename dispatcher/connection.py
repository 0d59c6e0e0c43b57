"""The HTTP layer under the sender: connections pinned to checked addresses, and a hard
deadline for every request.

Pinning: the sender puts the address the SSRF guard checked into the URL and keeps the
name in the `Host` header, so DNS cannot change between the check and the connect. For
https, `PinnedAdapter` still sends SNI for that name and verifies the certificate against
it, not against the address.

Deadline: requests' timeouts bound each socket read, so a server that sends one byte a
second never trips them. The `Watchdog` thread shuts down the socket of any request that
outlives its deadline; the blocked read then returns at once, whether it was waiting for
the status line, the headers or the body.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests import PreparedRequest
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

WATCHDOG_TICK_S = 0.05
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


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        _watch(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        _watch(self.sock)
        return super().getresponse()


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def host_name(host_header: str) -> str:
    """The name in a Host header value: without the port, without IPv6 brackets."""
    if host_header.startswith("["):
        return host_header[1 : host_header.index("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class PinnedAdapter(HTTPAdapter):
    """Connections whose sockets the watchdog can reach, with TLS checked for `Host`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def build_connection_pool_key_attributes(  # type: ignore[override]
        self, request: PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        pool_kwargs: dict[str, Any] = dict(kwargs)
        host = request.headers.get("host")
        if host_params["scheme"] == "https" and host:
            # Both are part of urllib3's pool key, so each name gets its own pool.
            pool_kwargs["server_hostname"] = host_name(host)
            pool_kwargs["assert_hostname"] = host_name(host)
        return dict(host_params), pool_kwargs
