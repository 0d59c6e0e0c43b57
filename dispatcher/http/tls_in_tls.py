"""TLS to an https target inside the TLS connection to an https:// egress proxy.

`ssl.SSLSocket` cannot wrap another `SSLSocket` (it would write to the file descriptor,
past the outer TLS), so the inner TLS runs on memory buffers (`ssl.SSLObject`) and its
records travel through the outer socket's `sendall` and `recv`. `TlsInTls` offers what an
exchange uses of a socket (`exchange.Stream`): send, recv, a timeout, the descriptor to
poll, close.

A timeout here is a deadline for the whole call, however many records of the outer
connection one send or recv takes, as it is for a socket's single call.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import TypeVar

from dispatcher.http.exchange import RECV_BYTES, Stream

T = TypeVar("T")


class TlsInTls:
    """The target's TLS over `outer`, the TLS connection to the proxy (a CONNECT tunnel)."""

    def __init__(self, outer: ssl.SSLSocket, context: ssl.SSLContext, server_hostname: str) -> None:
        self._outer = outer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._until: float | None = None

    def handshake(self) -> None:
        """The TLS handshake with the target: SNI and the certificate check for its name."""
        self._call(self._tls.do_handshake)

    def settimeout(self, timeout_s: float | None, /) -> None:
        self._until = None if timeout_s is None else time.monotonic() + timeout_s

    def send(self, data: bytes | memoryview, /) -> int:
        return self._call(lambda: self._tls.write(data))

    def recv(self, size: int, /) -> bytes:
        try:
            return self._call(lambda: self._tls.read(size))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""  # closed, with or without close_notify: what an SSLSocket answers

    def fileno(self) -> int:
        return self._outer.fileno()

    def close(self) -> None:
        self._outer.close()  # the connection to the proxy: the tunnel ends with it

    def _call(self, operation: Callable[[], T]) -> T:
        """Run `operation` on the inner TLS, moving its records over the outer connection
        until it no longer waits for the target's."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                self._receive()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._outer.settimeout(self._remaining())
            self._outer.sendall(pending)

    def _receive(self) -> None:
        self._outer.settimeout(self._remaining())
        chunk = self._outer.recv(RECV_BYTES)
        if chunk:
            self._incoming.write(chunk)
        else:
            self._incoming.write_eof()

    def _remaining(self) -> float | None:
        if self._until is None:
            return None
        left = self._until - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left


def wrap_tls(
    context: ssl.SSLContext, sock: socket.socket, server_hostname: str, timeout_s: float
) -> Stream:
    """TLS to the target over `sock`: directly on a plain socket (no proxy, or an http://
    one), inside the proxy's TLS on an `SSLSocket` (an https:// proxy)."""
    if isinstance(sock, ssl.SSLSocket):
        inner = TlsInTls(sock, context, server_hostname)
        inner.settimeout(timeout_s)
        inner.handshake()
        return inner
    sock.settimeout(timeout_s)
    return context.wrap_socket(sock, server_hostname=server_hostname)
